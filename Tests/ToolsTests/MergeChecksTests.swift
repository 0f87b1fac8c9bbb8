// merge refuses an adapter whose recorded base differs anywhere, not only in the projections it adapts:
// espalier.json's base_fingerprint_others covers the embedding, the norms and the head.

import Foundation
import Testing

@Suite struct MergeChecksTests {
  @Test func aChangedNormOrEmbeddingIsRefusedNotMergedSilently() throws {
    let dir = try FinetuneToolTests.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let base = try FinetuneToolTests.prunedBase(dir)
    let train = try FinetuneToolTests.train(base, dir + "/adapter", ["--steps", "1"])
    #expect(train.status == 0, "\(train.stderr)")
    let record = try FinetuneToolTests.json(dir + "/adapter/espalier.json")
    #expect((record["base_fingerprint_others"] as? String)?.hasPrefix("fnv1a64:") == true)
    #expect(try Tools.run("espalier", ["merge", base, dir + "/adapter", dir + "/merged"]).status == 0)
    for (i, name) in ["model.norm.weight", "model.embed_tokens.weight"].enumerated() {
      let changed = dir + "/changed-\(i)"
      try VerifyToolTests.planted(base, changed, name) { $0 + 1 }
      let merge = try Tools.run("espalier", ["merge", changed, dir + "/adapter", dir + "/merged-\(i)"])
      #expect(merge.status == 1, "\(name): \(merge.stderr)")
      #expect(merge.stderr.contains("other tensors"), "\(name): \(merge.stderr)")
      #expect(!FileManager.default.fileExists(atPath: dir + "/merged-\(i)"))
    }
  }
}
