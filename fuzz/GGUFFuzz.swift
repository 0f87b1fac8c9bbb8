// libFuzzer entry point for the GGUF reader (Sources/Formats/GGUF). Built by fuzz/build.sh against the
// instrumented Formats module.
//
// Properties checked on every input:
//  1. GGUFParser.parse never traps: it returns a header or throws a GGUFProblem;
//  2. every accepted tensor lies inside the file, plain ones (F32/F16/BF16/...) can be viewed, and
//     small ones of a supported quant type dequantise;
//  3. what the parser accepts, GGUFFile (over the same bytes, mapped from a scratch file) accepts too;
//     the llama config and the tokenizer files derive without trapping, and the JSON files generated
//     from them (config.json, generation_config.json, tokenizer.json, tokenizer_config.json) parse;
//     a generated tokenizer.json that Tokenizer accepts encodes a short text to ids inside its vocab;
//  4. GGUFCheckpoint opens the file (or throws), and its small tensors are read (dequantised, Q/K rows
//     unpermuted) to exactly the shape and dtype it lists.

@testable import Formats

/// Tensors up to this many elements are dequantised / read (bigger ones are only viewed).
private let smallTensor = 1 << 16

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUF(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = UnsafeRawBufferPointer(start: data, count: size)
  let parsed: GGUFParser.Result
  do { parsed = try GGUFParser.parse(bytes) } catch { return 0 }

  for t in parsed.tensors {
    let (start, overflow) = parsed.dataStart.addingReportingOverflow(t.offset)
    guard !overflow, t.offset >= 0, t.byteCount >= 0, start <= size, t.byteCount <= size - start else {
      propertyFailed("tensor `\(t.name)` (offset \(t.offset), \(t.byteCount) bytes) lies outside the \(size)-byte file")
    }
    let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + t.byteCount)])
    if let dtype = t.type.elementType {
      guard (try? Tensor(info: TensorInfo(name: t.name, dtype: dtype, shape: t.torchShape), bytes: raw, owner: nil)) != nil else {
        propertyFailed("accepted \(t.type.name) tensor `\(t.name)` \(t.dims) has no valid view of its \(t.byteCount) bytes")
      }
    }
    if GGUFQuants.supported.contains(t.type.id), t.elementCount <= smallTensor {
      var out = [Float](repeating: 0, count: max(t.elementCount, 1))
      let ok = out.withUnsafeMutableBufferPointer { GGUFQuants.dequantize(t.type, from: raw, to: $0.baseAddress!, count: t.elementCount) }
      guard ok else { propertyFailed("supported type \(t.type.name) of `\(t.name)` does not dequantise") }
    }
  }

  let path = Scratch.path("gguf", ".gguf")
  Scratch.write(bytes, to: path)
  defer { Scratch.remove(path) }
  let file: GGUFFile
  do { file = try GGUFFile(path: path) } catch { propertyFailed("GGUFFile refused what GGUFParser accepted: \(error)") }

  let config = try? GGUFLlama.config(file)
  if let config {
    for (name, text) in [("config.json", GGUFLlama.configJSON(config)), ("generation_config.json", GGUFLlama.generationConfigJSON(config))]
    where !parsesAsJSON(text) {
      propertyFailed("generated \(name) is not valid JSON:\n\(text)")
    }
  }
  if let files = try? GGUFTokenizer.files(file, contextLength: config?.maxPositionEmbeddings ?? 2048) {
    guard let json = try? JSONParser.parse(Array(files.tokenizerJSON.utf8)) else {
      propertyFailed("generated tokenizer.json is not valid JSON")
    }
    guard parsesAsJSON(files.tokenizerConfigJSON) else { propertyFailed("generated tokenizer_config.json is not valid JSON") }
    if let tokenizer = try? Tokenizer(json: json, file: path) {
      let ids = tokenizer.encode(fuzzSampleText)
      guard ids.allSatisfy({ $0 >= 0 && Int($0) < tokenizer.vocabSize }) else { propertyFailed("an encoded id is outside the vocab") }
      _ = tokenizer.decode(ids)
    }
  }

  if let checkpoint = try? GGUFCheckpoint(path: path) {
    for info in checkpoint.infos {
      guard let n = info.elementCount, n <= smallTensor else { continue }
      guard let tensor = try? checkpoint.tensor(info.name) else { continue }
      guard tensor.info == info, tensor.byteCount == info.byteCount else {
        propertyFailed("tensor `\(info.name)` reads as \(tensor.info) (\(tensor.byteCount) bytes), listed as \(info)")
      }
    }
    _ = try? checkpoint.sideFiles()
  }
  return 0
}
