// Sharded checkpoints: sizes, the hub's shard planning, reading the Python-written sharded fixture,
// writing and reading back our own, and the errors for broken indexes.

import Foundation
import Testing

@testable import Formats

@Suite struct ShardsTests {
  @Test func byteSizesParseLikeTheHub() throws {
    #expect(try ByteSize.parse("5GB") == 5_000_000_000)
    #expect(try ByteSize.parse("500MB") == 500_000_000)
    #expect(try ByteSize.parse("2GiB") == 2_147_483_648)
    #expect(try ByteSize.parse("1.5 kb") == 1500)
    #expect(try ByteSize.parse("1234") == 1234)
    for bad in ["", "GB", "5XB", "-1GB", "0"] {
      #expect(throws: FormatError.invalidSize(text: bad)) { _ = try ByteSize.parse(bad) }
    }
  }

  @Test func planningFollowsTheHubRule() {
    // An oversized tensor gets its own shard at once, while the current one stays open.
    #expect(ShardPlanner.plan(sizes: [400, 800, 2400, 800, 400], maxShardSize: 2000) == [[2], [0, 1, 3], [4]])
    #expect(ShardPlanner.plan(sizes: [400, 800, 2400, 900, 400], maxShardSize: 2000) == [[2], [0, 1], [3, 4]])
    #expect(ShardPlanner.plan(sizes: [1000, 1000, 1], maxShardSize: 2000) == [[0, 1], [2]])
    #expect(ShardPlanner.plan(sizes: [], maxShardSize: 10) == [])
    #expect(ShardPlanner.shardName(0, of: 3) == "model-00001-of-00003.safetensors")
    #expect(ShardPlanner.shardName(0, of: 1) == "model.safetensors")
  }

  @Test func planReproducesThePythonShardedFixture() throws {
    let manifest = try Fixtures.json("safetensors/manifest.json")
    let sharded = try #require(manifest["sharded"] as? [String: Any])
    let order = try #require(sharded["tensor_order"] as? [String])
    let weightMap = try #require(sharded["weight_map"] as? [String: String])
    let checkpoint = try SafetensorsCheckpoint(path: Fixtures.path("safetensors/sharded"))
    let sizes = order.map { checkpoint.entry($0)!.entry.dataRange.count }
    let plan = ShardPlanner.plan(sizes: sizes, maxShardSize: try #require(sharded["max_shard_size"] as? Int))
    for (i, members) in plan.enumerated() {
      for m in members { #expect(weightMap[order[m]] == ShardPlanner.shardName(i, of: plan.count)) }
    }
  }

  @Test func opensThePythonShardedCheckpoint() throws {
    let manifest = try Fixtures.json("safetensors/manifest.json")
    let sharded = try #require(manifest["sharded"] as? [String: Any])
    let checkpoint = try SafetensorsCheckpoint(path: Fixtures.path("safetensors/sharded"))
    #expect(checkpoint.files.count == 3)
    #expect(checkpoint.totalDataBytes == sharded["total_size"] as? Int)
    #expect(checkpoint.index?.totalSize == sharded["total_size"] as? Int)
    #expect(Set(checkpoint.infos.map(\.name)) == Set((sharded["weight_map"] as? [String: String])!.keys))
    let t = try checkpoint.tensor("model.norm.weight")
    #expect(t.shape == [t.elementCount])
  }

  @Test func shardedRoundTripIsExactAndIndexMatchesPython() throws {
    let source = try SafetensorsCheckpoint(path: Fixtures.path("safetensors/sharded"))
    let manifest = try Fixtures.json("safetensors/manifest.json")
    let sharded = try #require(manifest["sharded"] as? [String: Any])
    let order = try #require(sharded["tensor_order"] as? [String])
    let dir = try TemporaryDirectory()
    let sources = order.map { name in TensorSource(info: source.entry(name)!.info) { try source.tensor(name) } }
    let written = try SafetensorsCheckpoint.write(sources, toDirectory: dir.path, maxShardSize: 2000)
    #expect(written.count == 4)
    // Each shard and the index are byte-identical to what the Python tooling wrote.
    for name in written {
      #expect(try readBytes(dir.file(name)) == readBytes(Fixtures.path("safetensors/sharded/" + name)), "\(name)")
    }
    let back = try SafetensorsCheckpoint(path: dir.path)
    for name in order { #expect(try back.tensor(name).byteArray == source.tensor(name).byteArray) }
  }

  @Test func singleShardIsAPlainModelFile() throws {
    let dir = try TemporaryDirectory()
    let t = try Tensor(name: "w", shape: [2, 2], float32: [1, 0, 0, 1])
    let written = try SafetensorsCheckpoint.write([TensorSource(t)], toDirectory: dir.path, maxShardSize: 1_000_000)
    #expect(written == ["model.safetensors"])
    #expect(try SafetensorsCheckpoint(path: dir.path).infos == [t.info])
  }

  /// Copies the Python sharded fixture into a temp dir so a test can break it.
  func brokenCopy(_ mutate: (TemporaryDirectory) throws -> Void) throws -> TemporaryDirectory {
    let dir = try TemporaryDirectory()
    for name in try FileManager.default.contentsOfDirectory(atPath: Fixtures.path("safetensors/sharded")) {
      try FileManager.default.copyItem(atPath: Fixtures.path("safetensors/sharded/" + name), toPath: dir.file(name))
    }
    try mutate(dir)
    return dir
  }

  @Test func missingShardIsNamed() throws {
    let dir = try brokenCopy { try FileManager.default.removeItem(atPath: $0.file("model-00002-of-00003.safetensors")) }
    let indexPath = dir.path + "/" + ShardIndex.fileName
    #expect(throws: FormatError.shards(index: indexPath, problem: .missingShard("model-00002-of-00003.safetensors"))) {
      _ = try SafetensorsCheckpoint(path: dir.path)
    }
  }

  @Test func everyIndexProblemIsReportedTogether() throws {
    let dir = try brokenCopy { dir in
      var text = try String(contentsOfFile: dir.file(ShardIndex.fileName), encoding: .utf8)
      text = text.replacingOccurrences(of: "\"model.norm.weight\"", with: "\"model.renamed.weight\"")
      text = text.replacingOccurrences(
        of: "\"lm_head.weight\": \"model-00003-of-00003.safetensors\"",
        with: "\"lm_head.weight\": \"model-00002-of-00003.safetensors\"")
      try text.write(toFile: dir.file(ShardIndex.fileName), atomically: true, encoding: .utf8)
    }
    do {
      _ = try SafetensorsCheckpoint(path: dir.path)
      Issue.record("expected an error")
    } catch {
      guard case .many(let problems) = error else {
        Issue.record("expected several problems, got \(error)")
        return
      }
      let text = error.description
      #expect(problems.count == 3)
      #expect(text.contains("lm_head.weight"))
      #expect(text.contains("model.norm.weight"))
      #expect(text.contains("model.renamed.weight"))
    }
  }

  @Test func indexMayNotEscapeTheDirectory() throws {
    let dir = try brokenCopy { dir in
      try #"{"weight_map": {"a": "../elsewhere.safetensors"}}"#.write(
        toFile: dir.file(ShardIndex.fileName), atomically: true, encoding: .utf8)
    }
    #expect(throws: FormatError.self) { _ = try SafetensorsCheckpoint(path: dir.path) }
  }

  @Test func indexJSONMatchesTransformersFormatting() throws {
    let index = try ShardIndex(contentsOf: Fixtures.path("safetensors/sharded/" + ShardIndex.fileName))
    let python = try String(contentsOfFile: Fixtures.path("safetensors/sharded/" + ShardIndex.fileName), encoding: .utf8)
    #expect(index.json() == python)
  }

  @Test func directoryWithoutCheckpointIsExplained() throws {
    let dir = try TemporaryDirectory()
    do {
      _ = try SafetensorsCheckpoint(path: dir.path)
      Issue.record("expected an error")
    } catch {
      guard case .notACheckpoint(path: dir.path, reason: _) = error else {
        Issue.record("expected notACheckpoint, got \(error)")
        return
      }
    }
  }
}
