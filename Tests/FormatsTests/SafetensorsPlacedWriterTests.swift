// The placed writer (layout first, tensors in any order) against the streaming writer, which is checked
// byte for byte against the Python serializer: same files, same bytes, whatever the order of the puts,
// with metadata replaced at commit (same header length: rewritten in place; another length: data moved).

import Foundation
import Testing

@testable import Formats

@Suite struct SafetensorsPlacedWriterTests {
  static func tensors() throws -> [Tensor] {
    let file = try SafetensorsFile(path: Fixtures.path("safetensors/all_dtypes.safetensors"))
    let sharded = try SafetensorsCheckpoint(path: Fixtures.path("safetensors/sharded"))
    return try file.entries.map { try file.tensor($0) } + sharded.infos.map { try sharded.tensor($0.name) }
  }

  @Test(arguments: [nil, 200, 1_000])
  func anyOrderGivesTheStreamingWritersBytes(maxShardSize: Int?) throws {
    let tensors = try Self.tensors()
    let final = ["format": "pt", "espalier.sparsity": "0.49999999999999994"]
    for planned in [["format": "pt", "espalier.sparsity": "0.5"], ["format": "pt", "espalier.sparsity": "0.49999999999999991"]] {
      let a = try TemporaryDirectory(), b = try TemporaryDirectory()
      let names = try SafetensorsCheckpoint.write(tensors.map(TensorSource.init), toDirectory: a.path, maxShardSize: maxShardSize, metadata: final)
      let writer = try SafetensorsPlacedWriter(tensors.map(\.info), directory: b.path, maxShardSize: maxShardSize, metadata: planned)
      #expect(b.contents.allSatisfy { $0.hasPrefix(".") }, "nothing visible before commit")
      var random = SystemRandomNumberGenerator()
      for t in tensors.shuffled(using: &random) { try writer.put(t) }
      #expect(try writer.commit(metadata: final) == names)
      #expect(a.contents == b.contents)
      for name in names { #expect(try readBytes(a.file(name)) == readBytes(b.file(name)), "\(name), planned \(planned)") }
    }
  }

  /// Sliced puts (rows a few at a time, converted per slice) write the bytes of whole puts of the converted
  /// tensors, and report every source byte exactly once, in order.
  @Test(arguments: [DType?.none, .f32, .bf16])
  func slicedPutsGiveTheWholePutsBytes(target: DType?) throws {
    let tensors = try Self.tensors().filter { target == nil || $0.dtype.convertsToFloat32 }
    let converted = try tensors.map { t in try target.map { try t.converted(to: $0) } ?? t }
    let a = try TemporaryDirectory(), b = try TemporaryDirectory()
    let names = try SafetensorsCheckpoint.write(converted.map(TensorSource.init), toDirectory: a.path, maxShardSize: 1_000)
    let writer = try SafetensorsPlacedWriter(converted.map(\.info), directory: b.path, maxShardSize: 1_000)
    for t in tensors {
      var covered = 0
      try writer.put(t, sliceBytes: 7) { range in
        #expect(range.lowerBound == covered)
        covered = range.upperBound
      }
      #expect(covered == t.byteCount, "\(t.name)")
    }
    #expect(try writer.commit() == names)
    for name in names { #expect(try readBytes(a.file(name)) == readBytes(b.file(name)), "\(name)") }
  }

  @Test func refusesMismatchesAndLeavesNothingWhenATensorIsMissing() throws {
    let tensors = try Self.tensors()
    let dir = try TemporaryDirectory()
    let writer = try SafetensorsPlacedWriter(tensors.map(\.info), directory: dir.path, maxShardSize: 500)
    try writer.put(tensors[0])
    #expect(throws: FormatError.self) { try writer.put(tensors[0]) }
    let f32 = try #require(tensors.first { $0.dtype == .f32 })
    let narrowed = try f32.converted(to: .f16)
    #expect(throws: FormatError.self) { try writer.put(narrowed) }
    #expect(throws: FormatError.self) { try writer.put(try Tensor(name: "stranger", shape: [1], float32: [1])) }
    #expect(throws: FormatError.self) { try writer.commit() }
    #expect(dir.contents.isEmpty)
  }
}
