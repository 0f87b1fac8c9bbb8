// libFuzzer entry point for compressed sparse checkpoints (Sources/Formats/Compressed): the espalier
// layout (zstd frames of values and masks, descriptors in the safetensors __metadata__, bitmask and
// K:M group codes, per-tensor XXH64) and compressed-tensors' sparse-bitmask / sparse-24-bitmask.
// Built by fuzz/build.sh against the instrumented Formats module.
//
// Input: one selector byte, then a model.safetensors. The checkpoint is a scratch directory in /dev/shm
// holding that file and, by the selector (byte % 3), no config.json (0: plain or espalier), or a
// config.json naming sparse-bitmask (1) or sparse-24-bitmask (2). It is opened as any checkpoint is
// (Checkpoint.open), so the layout is recognised exactly as the tools recognise it.
//
// Properties checked on every input:
//  1. opening never traps: it gives a reader or throws a FormatError;
//  2. every listed tensor has a byte count, and reading it either throws or gives exactly the listed
//     dtype, shape and byte count (the dense tensor, decoded and checked);
//  3. side files and metadata are produced without trapping.
//
// Seeds: the committed fixtures/sparse checkpoints (compressed-tensors layouts), and espalier-layout
// checkpoints written by SparseCheckpointWriter when the binary runs with ESPALIER_FUZZ_WRITE_SEEDS=<dir>
// (fuzz/run.sh does this before fuzzing).

@testable import Formats

#if canImport(Glibc)
  import Glibc
#endif

private let configs: [String?] = [
  nil,
  #"{"model_type": "llama", "quantization_config": {"quant_method": "compressed-tensors", "sparsity_config": {"format": "sparse-bitmask"}}}"#,
  #"{"model_type": "llama", "quantization_config": {"quant_method": "compressed-tensors", "sparsity_config": {"format": "sparse-24-bitmask"}}}"#,
]

private let directory: String = {
  let d = Scratch.path("compressed")
  Scratch.makeDirectory(d)
  return d
}()

@_cdecl("LLVMFuzzerInitialize")
public func initializeCompressed(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
  if let target = getenv("ESPALIER_FUZZ_WRITE_SEEDS") {
    do { try writeSeeds(into: String(cString: target)) } catch { fatalError("writing seeds: \(error)") }
    exit(0)
  }
  return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCompressed(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  guard size >= 1 else { return 0 }
  let bytes = UnsafeRawBufferPointer(start: data, count: size)
  let model = directory + "/model.safetensors", config = directory + "/config.json"
  Scratch.write(UnsafeRawBufferPointer(rebasing: bytes[1...]), to: model)
  if let text = configs[Int(bytes[0]) % configs.count] { Scratch.write(text, to: config) } else { Scratch.remove(config) }
  check()
  return 0
}

private func check() {
  guard let reader = try? Checkpoint.open(directory) else { return }
  for info in reader.infos {
    guard let byteCount = info.byteCount else { propertyFailed("listed tensor `\(info.name)` \(info.shape) has no byte count") }
    guard let tensor = try? reader.tensor(info.name) else { continue }
    guard tensor.info == info, tensor.byteCount == byteCount else {
      propertyFailed("tensor `\(info.name)` reads as \(tensor.info) (\(tensor.byteCount) bytes), listed as \(info)")
    }
  }
  _ = try? reader.sideFiles()
  _ = reader.metadata
}

// MARK: Seeds

/// Writes espalier-layout checkpoints (selector byte 0 + model.safetensors) covering each encoding:
/// group (2:4 and 1:4), bitmask, dense, raw (small and integer tensors), and one with all of them.
private func writeSeeds(into target: String) throws {
  var state: UInt64 = 0x9E37_79B9_7F4A_7C15
  func next() -> UInt64 {
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return state >> 33
  }
  func values(_ count: Int, keep: (Int) -> Bool) -> [Float] {
    (0..<count).map { i in keep(i) ? Float(Int(next() % 2001) - 1000) / 256 + 0.001 : 0 }
  }
  let tensors: [(String, Tensor)] = [
    ("group24", try Tensor(name: "model.layers.0.self_attn.q_proj.weight", shape: [16, 64], float32: values(1024) { $0 % 4 < 2 }, as: .f16)),
    ("group14", try Tensor(name: "model.layers.0.mlp.up_proj.weight", shape: [2, 4, 64], float32: values(512) { $0 % 4 == 1 }, as: .f32)),
    ("bitmask", try Tensor(name: "model.layers.0.mlp.down_proj.weight", shape: [8, 64], float32: values(512) { _ in next() % 5 == 0 }, as: .f32)),
    ("dense", try Tensor(name: "model.embed_tokens.weight", shape: [8, 128], float32: values(1024) { _ in true }, as: .bf16)),
    ("raw", try Tensor(name: "model.norm.weight", shape: [4], float32: values(4) { _ in true })),
    ("int", try Tensor(name: "model.counts", dtype: .i32, shape: [300], data: (0..<1200).map { UInt8(truncatingIfNeeded: $0 * 7) })),
  ]
  let options = CompressionOptions(format: .espalier, level: 3, groupCodes: [.twoFour, GroupCode(keep: 1, group: 4)!])
  let work = Scratch.path("compressed-seeds")
  var sets = tensors.map { ($0.0, [$0.1]) }
  sets.append(("all", tensors.map(\.1)))
  for (name, set) in sets {
    FileSystem.removeTree(work)
    _ = try SparseCheckpointWriter.write(set.map(TensorSource.init), sideFiles: [], to: work, maxShardSize: nil, options: options)
    let file = try MappedFile(path: work + "/model.safetensors")
    var seed: [UInt8] = [0]
    file.withBytes { seed += $0 }
    seed.withUnsafeBytes { Scratch.write($0, to: target + "/espalier-" + name) }
  }
  FileSystem.removeTree(work)
}
