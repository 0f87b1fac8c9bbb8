// The GGUF reader against files written by the Python `gguf` package (llama.cpp's gguf-py): metadata of
// every value type, dequantisation against gguf.quants.dequantize, ggml's rejections, and the tiny Llama
// converted the way llama.cpp's converter does it, read back to the exact HF tensors.

import Foundation
import Testing

@testable import Formats

@Suite struct GGUFReaderTests {
  @Test func ggmlTypeTableMatchesGGUFPy() throws {
    let table = try #require(try Fixtures.json("gguf/ggml_quant_sizes.json")["types"] as? [[String: Any]])
    #expect(table.count == GGMLType.table.count)
    for row in table {
      let id = try #require(row["id"] as? Int)
      let type = try #require(GGMLType(id: UInt32(id)), "id \(id)")
      #expect(type.name == row["name"] as? String)
      #expect(type.blockSize == row["block_size"] as? Int)
      #expect(type.typeSize == row["type_size"] as? Int)
    }
    for removed: UInt32 in [4, 5, 31, 32, 33, 36, 37, 38, 99] { #expect(GGMLType(id: removed) == nil) }
  }

  @Test func metadataOfEveryValueType() throws {
    let manifest = try Fixtures.json("gguf/types_manifest.json")
    let file = try GGUFFile(path: Fixtures.path("gguf/types.gguf"))
    let kvs = try #require(manifest["kvs"] as? [[String: Any]])
    #expect(file.keys == kvs.map { $0["key"] as! String })
    #expect(file.alignment == manifest["alignment"] as? Int)
    #expect(file.dataStart == manifest["data_start"] as? Int)
    for kv in kvs {
      let key = kv["key"] as! String
      let value = try #require(file.metadata[key])
      try expectEqual(value, kv["value"]!, typeID: kv["type_id"] as! Int, key: key)
    }
  }

  /// Compares a parsed value with the JSON the Python side recorded, type included.
  func expectEqual(_ value: GGUFValue, _ json: Any, typeID: Int, key: String) throws {
    switch (typeID, value) {
    case (0, .uint8), (1, .int8), (2, .uint16), (3, .int16), (4, .uint32), (5, .int32), (10, .uint64), (11, .int64):
      let number = try #require(json as? NSNumber, "\(key)")
      if case .uint64(let u) = value { #expect(u == number.uint64Value, "\(key)") } else { #expect(value.intValue == number.intValue, "\(key)") }
    case (6, .float32(let f)): #expect(f == (json as? NSNumber).map { Float($0.doubleValue) }, "\(key)")
    case (12, .float64(let d)): #expect(d == (json as? NSNumber)?.doubleValue, "\(key)")
    case (7, .bool(let b)): #expect(b == json as? Bool, "\(key)")
    case (8, .string(let s)): #expect(s == json as? String, "\(key)")
    case (9, .array(_, let items)):
      let list = try #require(json as? [Any], "\(key)")
      #expect(items.count == list.count, "\(key)")
      for (item, j) in zip(items, list) {
        let elementType: Int
        switch item {
        case .array: elementType = 9
        case .string: elementType = 8
        case .float32: elementType = 6
        case .float64: elementType = 12
        case .bool: elementType = 7
        case .int32: elementType = 5
        case .int64: elementType = 11
        case .uint64: elementType = 10
        default: elementType = 4
        }
        try expectEqual(item, j, typeID: elementType, key: key)
      }
    default: Issue.record("\(key): type \(typeID) read as \(value)")
    }
  }

  @Test func tensorInfosAndDequantisationMatchGGUFPy() throws {
    let manifest = try Fixtures.json("gguf/types_manifest.json")
    let file = try GGUFFile(path: Fixtures.path("gguf/types.gguf"))
    let goldens = try SafetensorsFile(path: Fixtures.path("gguf/types_dequant.safetensors"))
    let tensors = try #require(manifest["tensors"] as? [[String: Any]])
    #expect(file.tensors.count == tensors.count)
    var typesSeen = Set<String>()
    for t in tensors {
      let name = t["name"] as! String
      let info = try #require(file.info(name))
      #expect(info.type.name == t["ggml_type"] as? String)
      #expect(info.dims == t["gguf_dims"] as? [Int])
      #expect(info.torchShape == t["torch_shape"] as? [Int])
      #expect(info.offset == t["offset"] as? Int)
      #expect(info.byteCount == t["n_bytes"] as? Int)
      let ours = try file.dequantized(info)
      let want = try goldens.tensor(name)
      #expect(ours.shape == want.shape, "\(name)")
      let a = try ours.float32(), b = try want.float32()
      let mismatches = zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
      #expect(mismatches == 0, "\(name) (\(info.type)): \(mismatches) of \(a.count) values differ")
      typesSeen.insert(info.type.name)
    }
    #expect(typesSeen.isSuperset(of: ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K"]))
  }

  /// The problem each adversarial file must raise, by case; every case of the fixture list is covered.
  static let expectedProblems: [String: @Sendable (GGUFProblem) -> Bool] = [
    "bad_magic.gguf": { $0 == .badMagic },
    "version_0.gguf": { $0 == .unsupportedVersion(0) },
    "version_1.gguf": { $0 == .unsupportedVersion(1) },
    "version_4.gguf": { $0 == .unsupportedVersion(4) },
    "byteswapped_version.gguf": { $0 == .byteSwapped },
    "duplicate_key.gguf": { $0 == .duplicateKey("general.name") },
    "empty_key.gguf": { $0 == .emptyKey },
    "kv_type_13.gguf": { $0 == .invalidValueType(key: "general.name", type: 13) },
    "alignment_not_u32.gguf": { $0 == .alignmentNotUInt32 },
    "alignment_0.gguf": { $0 == .invalidAlignment(0) },
    "alignment_not_pow2.gguf": { $0 == .invalidAlignment(48) },
    "tensor_name_64_bytes.gguf": { if case .tensorNameTooLong(let n) = $0 { return n.utf8.count == 64 } else { return false } },
    "duplicate_tensor.gguf": { $0 == .duplicateTensor("a") },
    "n_dims_5.gguf": { $0 == .tooManyDimensions(tensor: "a", count: 5) },
    "type_unknown_99.gguf": { $0 == .unknownType(tensor: "a", id: 99) },
    "type_removed_4.gguf": { $0 == .unknownType(tensor: "a", id: 4) },
    "ne0_not_multiple_of_block.gguf": { $0 == .rowNotWholeBlocks(tensor: "b", ne0: 40, blockSize: 32) },
    "offset_mismatch.gguf": { $0 == .offsetMismatch(tensor: "b", offset: 64, expected: 32) },
    "truncated_data.gguf": { $0 == .dataTruncated(tensor: "b") },
    "string_length_past_eof.gguf": { $0 == .stringTooLong(65536) },
    "tensor_count_negative.gguf": { $0 == .countTooLarge(what: "tensor", count: 1 << 63) },
    "kv_count_negative.gguf": { $0 == .countTooLarge(what: "metadata", count: UInt64.max) },
    "dim_negative.gguf": { $0 == .invalidDimension(tensor: "a", value: -1) },
    "array_count_past_eof.gguf": { if case .countTooLarge(let what, 1_000_000) = $0 { return what.contains("test.array_u32") } else { return false } },
  ]

  static let adversarialCases: [String] = {
    guard let cases = (try? Fixtures.json("gguf/adversarial/cases.json"))?["cases"] as? [[String: Any]] else { return [] }
    return cases.compactMap { $0["file"] as? String }
  }()

  @Test(arguments: adversarialCases)
  func adversarialFile(name: String) throws {
    let path = Fixtures.path("gguf/adversarial/" + name)
    if name.hasPrefix("valid") {
      let file = try GGUFFile(path: path)
      #expect(!file.tensors.isEmpty)
      return
    }
    let expected = try #require(Self.expectedProblems[name], "no expectation written for \(name)")
    do {
      _ = try GGUFFile(path: path)
      Issue.record("\(name) was accepted")
    } catch {
      guard case .gguf(file: path, problem: let problem) = error else {
        Issue.record("\(name): unexpected error \(error)")
        return
      }
      #expect(expected(problem), "\(name): got \(problem)")
      #expect(error.description.hasPrefix(path))
    }
  }

  /// A well-formed file with a type we do not dequantise (Q5_0) opens, and reading the tensor names it.
  @Test func unsupportedTypeIsNamedWithItsTensor() throws {
    var bytes: [UInt8] = []
    func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    put(UInt32(0x4655_4747)); put(UInt32(3)); put(UInt64(1)); put(UInt64(0))
    put(UInt64(1)); bytes += Array("q".utf8); put(UInt32(1)); put(UInt64(32)); put(UInt32(6)); put(UInt64(0))
    while bytes.count % 32 != 0 { bytes.append(0) }
    bytes += [UInt8](repeating: 0, count: 32)  // one 22-byte Q5_0 block, padded
    let dir = try TemporaryDirectory()
    try writeBytes(bytes, to: dir.file("q5.gguf"))
    let file = try GGUFFile(path: dir.file("q5.gguf"))
    let info = try #require(file.info("q"))
    #expect(info.type.name == "Q5_0")
    #expect(throws: FormatError.unsupportedGGMLType(file: dir.file("q5.gguf"), tensor: "q", type: "Q5_0")) {
      _ = try file.dequantized(info)
    }
  }

  @Test func everyRejectionOfTheFixtureListIsTested() {
    let rejections = Self.adversarialCases.filter { !$0.hasPrefix("valid") }
    #expect(rejections.count >= 20)
    #expect(Set(rejections) == Set(Self.expectedProblems.keys))
  }
}

@Suite struct GGUFLlamaTests {
  @Test func permutationWorkedExample() throws {
    // H = 2, hd = 4: GGUF holds HF rows in the order 0,2,1,3, 4,6,5,7.
    #expect((0..<8).map { QKPermutation.hfRow(ofGGUFRow: $0, rows: 8, heads: 2) } == [0, 2, 1, 3, 4, 6, 5, 7])
    // hd = 64: within a head the order is 0, 32, 1, 33, ...
    #expect((0..<4).map { QKPermutation.hfRow(ofGGUFRow: $0, rows: 192, heads: 3) } == [0, 32, 1, 33])
  }

  @Test(arguments: [(8, 2, 3), (192, 3, 5), (576, 9, 2), (12, 1, 7)])
  func permuteThenUnpermuteIsIdentity(rows: Int, heads: Int, rowBytes: Int) throws {
    let original = (0..<(rows * rowBytes)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    var permuted = [UInt8](repeating: 0, count: original.count)
    var back = [UInt8](repeating: 0, count: original.count)
    try original.withUnsafeBytes { src in
      try permuted.withUnsafeMutableBytes { try QKPermutation.permute(src.baseAddress!, into: $0.baseAddress!, rows: rows, rowBytes: rowBytes, heads: heads) }
    }
    try permuted.withUnsafeBytes { src in
      try back.withUnsafeMutableBytes { try QKPermutation.unpermute(src.baseAddress!, into: $0.baseAddress!, rows: rows, rowBytes: rowBytes, heads: heads) }
    }
    #expect(back == original)
    if heads * 2 < rows { #expect(permuted != original) }
  }

  @Test func oddHeadSizesAreRefused() {
    #expect(throws: FormatError.invalidPermutation(rows: 6, heads: 2)) {
      var b = [UInt8](repeating: 0, count: 6)
      try b.withUnsafeMutableBytes { try QKPermutation.unpermute($0.baseAddress!, into: $0.baseAddress!, rows: 6, rowBytes: 1, heads: 2) }
    }
  }

  @Test func namesMapBothWays() throws {
    let hf = try SafetensorsFile(path: Fixtures.path("tiny-llama/model.safetensors"))
    for e in hf.entries {
      let gguf = try #require(LlamaNames.ggufName(hf: e.info.name), "\(e.info.name)")
      #expect(LlamaNames.hfName(gguf: gguf) == e.info.name)
    }
    #expect(LlamaNames.ggufName(hf: "model.layers.3.self_attn.q_proj.weight") == "blk.3.attn_q.weight")
    #expect(LlamaNames.hfName(gguf: "output.weight") == "lm_head.weight")
    #expect(LlamaNames.hfName(gguf: "rope_freqs.weight") == nil)
    #expect(LlamaNames.permutationHeads(hfName: "model.layers.0.self_attn.k_proj.weight", heads: 9, kvHeads: 3) == 3)
    #expect(LlamaNames.permutationHeads(hfName: "model.layers.0.self_attn.v_proj.weight", heads: 9, kvHeads: 3) == nil)
  }

  /// The tiny Llama through llama.cpp's conversion and back: every tensor bit-exact, Q and K included.
  @Test func tinyLlamaGGUFReadsBackToTheHFTensors() throws {
    let gguf = try GGUFCheckpoint(path: Fixtures.path("gguf/tiny-llama.gguf"))
    let hf = try SafetensorsCheckpoint(path: Fixtures.path("tiny-llama"))
    #expect(Set(gguf.infos.map(\.name)) == Set(hf.infos.map(\.name)))
    for info in hf.infos {
      let ours = try gguf.tensor(info.name)
      #expect(ours.info == info)
      #expect(try ours.byteArray == hf.tensor(info.name).byteArray, "\(info.name)")
    }
  }

  @Test func quantisedTinyLlamaMatchesGGUFPyDequantisedAndUnpermuted() throws {
    let gguf = try GGUFCheckpoint(path: Fixtures.path("gguf/tiny-llama.q8_0.gguf"))
    let goldens = try SafetensorsFile(path: Fixtures.path("gguf/tiny-llama.q8_0.dequant.safetensors"))
    #expect(gguf.infos.count == goldens.entries.count)
    for e in goldens.entries {
      let ours = try gguf.tensor(e.info.name)
      #expect(ours.shape == e.info.shape)
      #expect(try ours.byteArray == goldens.tensor(e).byteArray, "\(e.info.name)")
    }
  }

  @Test func configFromMetadataMatchesTheHFConfig() throws {
    let gguf = try GGUFCheckpoint(path: Fixtures.path("gguf/tiny-llama.gguf"))
    let files = try gguf.sideFiles()
    let config = try #require(files.first { $0.name == "config.json" })
    guard case .text(let text) = config.content else { Issue.record("config is not generated"); return }
    let ours = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    let want = try Fixtures.json("tiny-llama/config.json")
    for key in ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
      "head_dim", "max_position_embeddings", "vocab_size", "bos_token_id", "eos_token_id"] {
      #expect(ours[key] as? Int == want[key] as? Int, "\(key)")
    }
    for key in ["rms_norm_eps", "rope_theta"] { #expect(ours[key] as? Double == want[key] as? Double, "\(key)") }
    for key in ["tie_word_embeddings", "attention_bias"] { #expect(ours[key] as? Bool == want[key] as? Bool, "\(key)") }
    #expect(ours["model_type"] as? String == "llama")
    #expect(text.hasSuffix("}\n"))
  }

  @Test func tokenizerFromMetadataMatchesTheHFTokenizer() throws {
    let gguf = try GGUFCheckpoint(path: Fixtures.path("gguf/tiny-llama.gguf"))
    let file = try #require(try gguf.sideFiles().first { $0.name == "tokenizer.json" })
    guard case .text(let text) = file.content else { Issue.record("tokenizer is not generated"); return }
    let ours = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    let want = try Fixtures.json("tiny-llama/tokenizer.json")
    let ourModel = try #require(ours["model"] as? [String: Any])
    let wantModel = try #require(want["model"] as? [String: Any])
    #expect(ourModel["vocab"] as? [String: Int] == wantModel["vocab"] as? [String: Int])
    #expect(ourModel["merges"] as? [[String]] == wantModel["merges"] as? [[String]])
    #expect(NSArray(array: ours["added_tokens"] as? [Any] ?? []) == NSArray(array: want["added_tokens"] as? [Any] ?? []))
    #expect(NSDictionary(dictionary: ours["pre_tokenizer"] as? [String: Any] ?? [:])
      == NSDictionary(dictionary: want["pre_tokenizer"] as? [String: Any] ?? [:]))
  }

  @Test func nonLlamaArchitecturesAreNamed() throws {
    #expect(throws: FormatError.unsupportedArchitecture(file: Fixtures.path("gguf/types.gguf"), architecture: "test")) {
      _ = try GGUFCheckpoint(path: Fixtures.path("gguf/types.gguf"))
    }
  }
}
