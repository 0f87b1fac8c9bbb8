// Compressed sparse checkpoints: the XXH64 and zstd frames under them, bit-exact round trips of every
// dtype and pattern through the three layouts, files written by compressed-tensors 0.14.0.1 read back
// exactly, our sparse-bitmask output byte-identical to its own, and corruption found, never decoded.

import CZstd
import Foundation
import Testing

@testable import Formats

@Suite struct SparseCheckpointTests {
  @Test func xxh64MatchesTheReferenceAndZstdsFrameChecksum() throws {
    #expect(XXHash64.hash(UnsafeRawBufferPointer(start: nil, count: 0)) == 0xEF46_DB37_51D8_E999)
    // zstd computes XXH64 itself: its frame checksum (the last 4 bytes) is the low half of ours.
    var generator = SystemRandomNumberGenerator()
    for n in [1, 3, 4, 7, 8, 31, 32, 33, 63, 100, 1000, 70_000] {
      let data = (0..<n).map { _ in UInt8.random(in: 0...255, using: &generator) }
      let frames = try data.withUnsafeBytes { try ZstdFrames.compress($0, elementSize: 1, chunkElements: 1 << 20, level: 3) }
      let tail = Array(frames.bytes).suffix(4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
      #expect(tail == UInt32(truncatingIfNeeded: data.withUnsafeBytes { XXHash64.hash($0) }), "length \(n)")
    }
  }

  @Test func groupCodesEnumerateEverySet() throws {
    let code = GroupCode.twoFour
    #expect(code.sets == [0b0011, 0b0101, 0b1001, 0b0110, 0b1010, 0b1100])
    #expect(code.groupsPerByte == 3)
    #expect(GroupCode(keep: 4, group: 8)!.sets.count == 70)
    #expect(GroupCode(keep: 4, group: 8)!.groupsPerByte == 1)
    #expect(GroupCode(keep: 1, group: 2)!.groupsPerByte == 8)
    // The bitmask packs like numpy packbits(bitorder="little") (formats.md §2.6).
    let row: [UInt8] = [1, 0, 1, 1, 0, 0, 0, 0, 1]
    let packed = row.withUnsafeBytes { SparseMasks.encodeBitmask($0, rows: 1, cols: 9, elementSize: 1) }
    #expect(packed.mask == [0x0D, 0x01])
    #expect(packed.values == [1, 1, 1, 1])
  }

  enum Pattern: String, CaseIterable { case dense, unstructured, twoFour, empty }

  /// A tensor of random bit patterns (never all-zero), then zeroed by `pattern`; some kept elements are
  /// -0.0-like (only the top bit set), which must survive as stored values.
  static func tensor(_ name: String, _ dtype: DType, _ shape: [Int], _ pattern: Pattern, seed: UInt64) throws -> Tensor {
    var state = seed
    func next() -> UInt64 { state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407; return state >> 11 }
    let size = dtype.bits / 8
    let count = shape.reduce(1, *)
    var bytes = [UInt8](repeating: 0, count: count * size)
    var groupSet: UInt8 = 0
    for i in 0..<count {
      if i % 4 == 0 {  // 2:4: a random pair of each 4, and now and then fewer
        groupSet = GroupCode.twoFour.sets[Int(next() % 6)] & (next() % 9 == 0 ? 0b0101 : 0b1111)
      }
      let keep: Bool
      switch pattern {
      case .dense: keep = true
      case .unstructured: keep = next() % 2 == 0
      case .twoFour: keep = groupSet & (1 << (i % 4)) != 0
      case .empty: keep = false
      }
      guard keep else { continue }
      for b in 0..<size { bytes[i * size + b] = UInt8(truncatingIfNeeded: next()) }
      if next() % 17 == 0 { for b in 0..<size { bytes[i * size + b] = b == size - 1 ? 0x80 : 0 } }
      if bytes[(i * size)..<(i * size + size)].allSatisfy({ $0 == 0 }) { bytes[i * size] = 1 }
    }
    return try Tensor(name: name, dtype: dtype, shape: shape, data: bytes)
  }

  static let metadata = ["format": "pt", "espalier.method": "wanda", "note": "carried through compression"]

  static func write(_ tensors: [Tensor], to directory: String) throws {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    try SafetensorsCheckpoint.write(tensors.map(TensorSource.init), toDirectory: directory, maxShardSize: nil, metadata: metadata)
  }

  static func expectSameTensors(_ reader: any CheckpointReader, _ tensors: [Tensor], _ context: String) throws {
    #expect(Set(reader.infos.map(\.name)) == Set(tensors.map(\.name)), "\(context)")
    for t in tensors {
      let back = try reader.tensor(t.name)
      #expect(back.info == t.info, "\(context): \(t.name)")
      #expect(back.byteArray == t.byteArray, "\(context): \(t.name) differs")
    }
  }

  @Test(arguments: [DType.f32, .f16, .bf16, .f64, .f8e4m3, .f8e5m2])
  func everyPatternRoundTripsBitExactly(dtype: DType) throws {
    let tmp = try TemporaryDirectory()
    var tensors: [Tensor] = []
    for (k, pattern) in Pattern.allCases.enumerated() {
      tensors.append(try Self.tensor("model.layers.\(k).mlp.up_proj.weight", dtype, [37, 64], pattern, seed: UInt64(k)))
      tensors.append(try Self.tensor("model.layers.\(k).mlp.down_proj.weight", dtype, [24, 20], pattern, seed: UInt64(k + 10)))
      tensors.append(try Self.tensor("model.layers.\(k).extra.weight", dtype, [3, 5, 8 * 16], pattern, seed: UInt64(k + 20)))
    }
    tensors.append(try Self.tensor("model.norm.weight", dtype, [48], .dense, seed: 99))
    tensors.append(try Self.tensor("model.counts", .i32, [300], .unstructured, seed: 98))
    try Self.write(tensors, to: tmp.file("dense"))
    for (format, shard) in [(SparseFormat.espalier, 6000), (.espalier, nil), (.sparseBitmask, 5000)] as [(SparseFormat, Int?)] {
      let out = tmp.file("c-\(format.rawValue)-\(shard ?? 0)")
      var options = ConvertOptions(maxShardSize: shard)
      options.compression = CompressionOptions(format: format, level: 5)
      _ = try Converter.convert(input: tmp.file("dense"), output: out, options: options)
      try Self.expectSameTensors(try Checkpoint.open(out), tensors, "\(format) \(dtype) read directly")
      _ = try Converter.convert(input: out, output: out + "-dense", options: ConvertOptions())
      try Self.expectSameTensors(try Checkpoint.open(out + "-dense"), tensors, "\(format) \(dtype) decompressed")
      // The whole file comes back, metadata included.
      #expect(try readBytes(out + "-dense/model.safetensors") == readBytes(tmp.file("dense/model.safetensors")), "\(format) \(dtype)")
      #expect(try Checkpoint.open(out).metadata == Self.metadata)
      #expect(!(try Checkpoint.open(out + "-dense") is SparseCheckpoint))
    }
  }

  /// Every dtype the toolkit knows rides through every layout: floats with a byte per element or more
  /// are compressed (when large enough), the rest are stored raw, and all come back bit for bit.
  @Test func everyDTypeSurvivesEveryLayout() throws {
    let tmp = try TemporaryDirectory()
    var tensors: [Tensor] = []
    var generator = SystemRandomNumberGenerator()
    for (k, dtype) in DType.allCases.enumerated() {
      for (shape, suffix) in [([64, 64], "_proj.weight"), ([8], ".small")] {
        let info = TensorInfo(name: "model.layers.\(k).\(dtype.rawValue.lowercased())\(suffix)", dtype: dtype, shape: shape)
        var bytes = (0..<info.byteCount!).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let size = max(1, dtype.bits / 8)
        for i in stride(from: 0, to: bytes.count - size, by: 2 * size) { for b in 0..<size { bytes[i + b] = 0 } }  // half zeros
        tensors.append(try Tensor(name: info.name, dtype: dtype, shape: shape, data: bytes))
      }
    }
    try Self.write(tensors, to: tmp.file("dense"))
    for format in [SparseFormat.espalier, .sparseBitmask] {
      var options = ConvertOptions()
      options.compression = CompressionOptions(format: format)
      _ = try Converter.convert(input: tmp.file("dense"), output: tmp.file(format.rawValue), options: options)
      try Self.expectSameTensors(try Checkpoint.open(tmp.file(format.rawValue)), tensors, "\(format)")
      _ = try Converter.convert(input: tmp.file(format.rawValue), output: tmp.file(format.rawValue + "-dense"), options: ConvertOptions())
      #expect(try readBytes(tmp.file(format.rawValue + "-dense/model.safetensors")) == readBytes(tmp.file("dense/model.safetensors")))
    }
  }

  @Test func twoFourLayoutsTakeExactlyTheTensorsThatFit() throws {
    let tmp = try TemporaryDirectory()
    let fits = [
      try Self.tensor("model.layers.0.self_attn.q_proj.weight", .bf16, [16, 32], .twoFour, seed: 1),
      try Self.tensor("model.layers.0.self_attn.k_proj.weight", .f16, [8, 32], .empty, seed: 2),
      try Self.tensor("model.embed_tokens.weight", .bf16, [20, 32], .dense, seed: 3),
    ]
    try Self.write(fits, to: tmp.file("fits"))
    for format in [SparseFormat.sparse24Bitmask, .espalier] {
      var options = ConvertOptions()
      options.compression = CompressionOptions(format: format)
      _ = try Converter.convert(input: tmp.file("fits"), output: tmp.file("c-\(format.rawValue)"), options: options)
      try Self.expectSameTensors(try Checkpoint.open(tmp.file("c-\(format.rawValue)")), fits, "\(format)")
    }
    // espalier coded the 2:4 tensor with group codes, 2/3 of a bit per element.
    let stored = try SafetensorsFile(path: tmp.file("c-espalier/model.safetensors"))
    let descriptors = try JSONParser.parse(Array(stored.metadata!["tensors"]!.utf8)).objectValue!
    #expect(descriptors["model.layers.0.self_attn.q_proj.weight"]?.objectValue?["encoding"]?.stringValue == "group")
    #expect(descriptors["model.embed_tokens.weight"]?.objectValue?["encoding"]?.stringValue == "dense")

    let broken = [try Self.tensor("model.layers.0.mlp.up_proj.weight", .bf16, [16, 32], .unstructured, seed: 4)]
    try Self.write(broken, to: tmp.file("broken"))
    var options = ConvertOptions()
    options.compression = CompressionOptions(format: .sparse24Bitmask)
    #expect {
      _ = try Converter.convert(input: tmp.file("broken"), output: tmp.file("c-broken"), options: options)
    } throws: { "\($0)".contains("model.layers.0.mlp.up_proj.weight") && "\($0)".contains("does not fit sparse-24-bitmask") }
    #expect(!FileManager.default.fileExists(atPath: tmp.file("c-broken")))
  }

  static let cases = ["dense-unstructured-bf16", "dense-24-f16", "dense-unstructured-f32"]

  /// Directories compressed-tensors 0.14.0.1 wrote (fixtures/make_sparse_goldens.py) decode to the dense
  /// originals, and ours are byte-identical to the ones that script's `check` verified with it.
  @Test(arguments: cases)
  func compressedTensorsFilesReadBackAndOursMatchThem(name: String) throws {
    let dense = try Checkpoint.open(Fixtures.path("sparse/\(name)"))
    let tensors = try dense.infos.map { try dense.tensor($0.name) }
    var layouts = ["bitmask"]
    if name.contains("-24-") { layouts.append("24") }
    let tmp = try TemporaryDirectory()
    for layout in layouts {
      let theirs = try Checkpoint.open(Fixtures.path("sparse/ct-\(layout)-\(name)"))
      #expect((theirs as? SparseCheckpoint)?.format == (layout == "24" ? .sparse24Bitmask : .sparseBitmask))
      try Self.expectSameTensors(theirs, tensors, "ct-\(layout)-\(name)")
      var options = ConvertOptions()
      options.compression = CompressionOptions(format: layout == "24" ? .sparse24Bitmask : .sparseBitmask)
      let out = tmp.file(layout)
      _ = try Converter.convert(input: Fixtures.path("sparse/\(name)"), output: out, options: options)
      let committed = Fixtures.path("sparse/ours-\(layout)-\(name)")
      #expect(try readBytes(out + "/model.safetensors") == readBytes(committed + "/model.safetensors"))
      #expect(try readBytes(out + "/config.json") == readBytes(committed + "/config.json"))
      if layout == "bitmask" {  // deterministic, so byte-identical to what compressed-tensors itself wrote
        #expect(try readBytes(out + "/model.safetensors") == readBytes(Fixtures.path("sparse/ct-bitmask-\(name)/model.safetensors")))
      }
    }
    let result = try Fixtures.json("sparse/ct_interop_result.json")
    #expect(result["compressed_tensors"] as? String == "0.14.0.1")
    #expect(result["all_equal"] as? Bool == true)
  }

  @Test func corruptionIsFoundNotDecoded() throws {
    let tmp = try TemporaryDirectory()
    let tensors = [
      try Self.tensor("model.layers.0.mlp.up_proj.weight", .bf16, [64, 64], .unstructured, seed: 5),
      try Self.tensor("model.norm.weight", .bf16, [64], .dense, seed: 6),
    ]
    try Self.write(tensors, to: tmp.file("dense"))
    var options = ConvertOptions()
    options.compression = CompressionOptions()
    _ = try Converter.convert(input: tmp.file("dense"), output: tmp.file("c"), options: options)
    let path = tmp.file("c/model.safetensors")
    let original = try readBytes(path)
    let file = try SafetensorsFile(path: path)
    for (part, tensor) in [("model.layers.0.mlp.up_proj.weight#values", "model.layers.0.mlp.up_proj.weight"),
                           ("model.layers.0.mlp.up_proj.weight#mask", "model.layers.0.mlp.up_proj.weight"),
                           ("model.norm.weight", "model.norm.weight")] {
      let entry = try #require(file.entry(part))
      for offset in [0, entry.dataRange.count / 2, entry.dataRange.count - 1] {
        var bytes = original
        bytes[file.header.dataStart + entry.dataRange.lowerBound + offset] ^= 0x10
        try writeBytes(bytes, to: path)
        let reader = try Checkpoint.open(tmp.file("c"))
        #expect(throws: FormatError.self, "\(part) byte \(offset)") { _ = try reader.tensor(tensor) }
        do { _ = try reader.tensor(tensor) } catch {
          #expect("\(error)".contains(tensor), "names the tensor: \(error)")
        }
      }
    }
    try writeBytes(original, to: path)
    try Self.expectSameTensors(try Checkpoint.open(tmp.file("c")), tensors, "restored")

    // compressed-tensors' row_offsets are checked too, though its decoder ignores them.
    let ct = tmp.file("ct")
    try FileManager.default.copyItem(atPath: Fixtures.path("sparse/ct-bitmask-dense-unstructured-bf16"), toPath: ct)
    let module = "model.layers.0.mlp.down_proj"
    let stored = try SafetensorsFile(path: ct + "/model.safetensors")
    let offsets = try #require(stored.entry(module + ".row_offsets"))
    var bytes = try readBytes(ct + "/model.safetensors")
    bytes[stored.header.dataStart + offsets.dataRange.lowerBound] ^= 1
    try writeBytes(bytes, to: ct + "/model.safetensors")
    #expect { _ = try Checkpoint.open(ct).tensor(module + ".weight") } throws: {
      "\($0)".contains("\(module).row_offsets is not the running count")
    }
  }

  /// Rewrites a safetensors file's header through `edit` (offsets stay valid: data is unchanged).
  static func rewriteHeader(_ path: String, _ edit: (inout [String: Any]) throws -> Void) throws {
    let bytes = try readBytes(path)
    let n = Int(bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    var header = try #require(try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + n)])) as? [String: Any])
    try edit(&header)
    var json = [UInt8](try JSONSerialization.data(withJSONObject: header))
    json += Array(repeating: 0x20, count: (8 - json.count % 8) % 8)
    var out: [UInt8] = []
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { out += $0 }
    try writeBytes(out + json + bytes[(8 + n)...], to: path)
  }

  @Test func hostileDescriptorsAreErrorsNotTraps() throws {
    let tmp = try TemporaryDirectory()
    let name = "model.layers.0.mlp.up_proj.weight"
    try Self.write([try Self.tensor(name, .bf16, [32, 64], .twoFour, seed: 7)], to: tmp.file("dense"))
    var options = ConvertOptions()
    options.compression = CompressionOptions()
    _ = try Converter.convert(input: tmp.file("dense"), output: tmp.file("good"), options: options)
    typealias Edit = (inout [String: Any]) -> Void
    func descriptor(_ change: @escaping (inout [String: Any]) -> Void) -> Edit {
      { header in
        var meta = header["__metadata__"] as! [String: String]
        var tensors = try! JSONSerialization.jsonObject(with: Data(meta["tensors"]!.utf8)) as! [String: [String: Any]]
        change(&tensors[name]!)
        meta["tensors"] = String(decoding: try! JSONSerialization.data(withJSONObject: tensors), as: UTF8.self)
        header["__metadata__"] = meta
      }
    }
    let cases: [(Edit, String)] = [
      ({ h in var m = h["__metadata__"] as! [String: String]; m["version"] = "2"; h["__metadata__"] = m }, "this build reads version 1"),
      (descriptor { $0["dtype"] = "BF17" }, "lacks a valid dtype or shape"),
      (descriptor { $0["shape"] = [-1, 64] }, "lacks a valid dtype or shape"),
      (descriptor { $0["stored"] = 1 << 40 }, "valid `stored` count"),
      (descriptor { $0["encoding"] = "group"; $0["keep"] = 3; $0["group"] = 4 }, "no valid group code"),
      (descriptor { $0["value_frames"] = [Int.max] }, "zstd frame sizes do not fit"),
      (descriptor { $0["mask_frames"] = [] }, "zstd frames where 1 are needed"),
      (descriptor { $0["encoding"] = "magic" }, "unknown encoding `magic`"),
      (descriptor { $0["xxh64"] = "0000000000000000" }, "checksum mismatch"),
    ]
    for (k, (edit, message)) in cases.enumerated() {
      let dir = tmp.file("bad-\(k)")
      try FileManager.default.copyItem(atPath: tmp.file("good"), toPath: dir)
      try Self.rewriteHeader(dir + "/model.safetensors", edit)
      #expect(throws: FormatError.self, "case \(k): \(message)") { _ = try Checkpoint.open(dir).tensor(name) }
      do { _ = try Checkpoint.open(dir).tensor(name) } catch { #expect("\(error)".contains(message), "\(error)") }
    }
    // A compressed-tensors `.shape` that is no 2-D shape.
    let ct = tmp.file("ct")
    try FileManager.default.copyItem(atPath: Fixtures.path("sparse/ct-bitmask-dense-unstructured-f32"), toPath: ct)
    let file = try SafetensorsFile(path: ct + "/model.safetensors")
    let shape = try #require(file.entry("model.layers.0.mlp.up_proj.shape"))
    var bytes = try readBytes(ct + "/model.safetensors")
    for b in 0..<8 { bytes[file.header.dataStart + shape.dataRange.lowerBound + b] = 0xFF }  // rows = -1
    try writeBytes(bytes, to: ct + "/model.safetensors")
    #expect { _ = try Checkpoint.open(ct) } throws: { "\($0)".contains("is not the shape of a 2-D") }
  }
}
