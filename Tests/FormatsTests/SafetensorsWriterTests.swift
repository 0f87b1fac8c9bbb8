// The writer against the reference serializer: golden byte vectors, byte-identical rewrites of files
// the Python `safetensors` package wrote, round trips of every dtype, and no partial files on failure.

import Foundation
import Testing

@testable import Formats

@Suite struct SafetensorsWriterTests {
  static let vectors = [
    "empty", "meta_only", "i32_test", "f32_attn0", "attn0_4d", "two_tensors",
  ]

  /// Rewrites a Python-written file with our writer, with the same metadata; bytes must be identical.
  static func rewrite(_ relative: String, into dir: TemporaryDirectory) throws -> (ours: [UInt8], theirs: [UInt8]) {
    let source = try SafetensorsFile(path: Fixtures.path("safetensors/" + relative))
    let out = dir.file("out.safetensors")
    let tensors = try source.entries.map { try source.tensor($0) }
    try SafetensorsWriter.write(tensors.reversed(), to: out, metadata: source.metadata)
    return (try readBytes(out), try readBytes(source.path))
  }

  @Test(arguments: vectors)
  func goldenVectorsAreByteIdentical(name: String) throws {
    let dir = try TemporaryDirectory()
    let (ours, theirs) = try Self.rewrite("writer_vectors/\(name).safetensors", into: dir)
    #expect(ours == theirs)
  }

  @Test func goldenHeaderLengths() throws {
    let expected = ["empty": 8, "meta_only": 40, "i32_test": 64, "f32_attn0": 64, "attn0_4d": 72, "two_tensors": 128]
    for (name, n) in expected {
      let bytes = try readBytes(Fixtures.path("safetensors/writer_vectors/\(name).safetensors"))
      #expect(bytes.prefix(8) == ArraySlice(withUnsafeBytes(of: UInt64(n).littleEndian) { Array($0) }), "\(name)")
    }
    // The empty file: 8-byte N, `{}` and six spaces.
    let empty = try readBytes(Fixtures.path("safetensors/writer_vectors/empty.safetensors"))
    #expect(empty == [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8))
  }

  @Test(arguments: ["all_dtypes.safetensors", "sorted_order.safetensors", "with_metadata.safetensors"])
  func pythonFilesAreReproducedByteForByte(relative: String) throws {
    let dir = try TemporaryDirectory()
    let (ours, theirs) = try Self.rewrite(relative, into: dir)
    #expect(ours.count == theirs.count)
    #expect(ours == theirs)
  }

  @Test func insertionOrderDoesNotMatter() throws {
    let dir = try TemporaryDirectory()
    let a = try Tensor(name: "b", dtype: .i32, shape: [2], data: [1, 0, 0, 0, 2, 0, 0, 0])
    let b = try Tensor(name: "a", shape: [1, 2], float32: [1.5, -2], as: .f16)
    try SafetensorsWriter.write([a, b], to: dir.file("1.safetensors"))
    try SafetensorsWriter.write([b, a], to: dir.file("2.safetensors"))
    #expect(try readBytes(dir.file("1.safetensors")) == readBytes(dir.file("2.safetensors")))
  }

  /// Every dtype of the table survives write -> read with its bytes, shape and name intact.
  @Test(arguments: DType.allCases)
  func roundTripOfEveryDtype(dtype: DType) throws {
    let dir = try TemporaryDirectory()
    // Sub-byte dtypes need element counts that fill whole bytes, so no scalar for them.
    let shapes: [[Int]] = [dtype.bits < 8 ? [4] : [], [0, 3], [2, 4], [1, 2, 2, 2]]
    var generator = SplitMix64(seed: UInt64(dtype.writeRank))
    var tensors: [Tensor] = []
    for (i, shape) in shapes.enumerated() {
      let info = TensorInfo(name: "t\(i)", dtype: dtype, shape: shape)
      let bytes = (0..<info.byteCount!).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
      tensors.append(try Tensor(name: info.name, dtype: dtype, shape: shape, data: bytes))
    }
    let path = dir.file("rt.safetensors")
    try SafetensorsWriter.write(tensors, to: path)
    let file = try SafetensorsFile(path: path)
    #expect(file.metadata == ["format": "pt"])
    for t in tensors {
      let back = try file.tensor(t.name)
      #expect(back.info == t.info)
      #expect(back.byteArray == t.byteArray)
    }
    // Written files are aligned: every tensor starts at a multiple of its element size.
    for e in file.entries where dtype.bits >= 8 {
      #expect((file.header.dataStart + e.dataRange.lowerBound) % (dtype.bits / 8) == 0)
    }
  }

  @Test func failedWriteLeavesNoFile() throws {
    let dir = try TemporaryDirectory()
    let good = try Tensor(name: "good", shape: [2], float32: [1, 2])
    let failing = TensorSource(info: TensorInfo(name: "bad", dtype: .f32, shape: [2])) {
      throw FormatError.io(file: "source", reason: "disk went away")
    }
    #expect(throws: FormatError.io(file: "source", reason: "disk went away")) {
      try SafetensorsWriter.write([TensorSource(good), failing], to: dir.file("x.safetensors"))
    }
    #expect(dir.contents.isEmpty)
    // A source that delivers another shape than it announced is caught, and leaves nothing either.
    let lying = TensorSource(info: TensorInfo(name: "liar", dtype: .f32, shape: [3])) { good }
    #expect(throws: FormatError.tensorInvalidInfo(file: dir.file("y.safetensors"), tensor: "liar")) {
      try SafetensorsWriter.write([lying], to: dir.file("y.safetensors"))
    }
    #expect(dir.contents.isEmpty)
  }

  @Test func writerRefusesDuplicatesAndOversizedHeaders() throws {
    let a = try Tensor(name: "same", shape: [1], float32: [1])
    #expect(throws: FormatError.duplicateKey(file: "x", key: "same")) {
      _ = try SafetensorsWriter.header(for: [a.info, a.info], metadata: nil, file: "x")
    }
    let huge = String(repeating: "a", count: 100_000_000)
    #expect(throws: FormatError.headerTooLarge(file: "x")) {
      _ = try SafetensorsWriter.header(for: [], metadata: ["big": huge], file: "x")
    }
  }

  @Test func jsonStringsAreEscapedLikeSerde() {
    #expect(JSONWriter.compactString("a\"b\\c\n\u{1}é/") == "\"a\\\"b\\\\c\\n\\u0001é/\"")
    #expect(JSONWriter.asciiString("é😀") == "\"\\u00e9\\ud83d\\ude00\"")
  }
}
