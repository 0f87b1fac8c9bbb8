// Our GGUF output through three engines: transformers' GGUF loader (fixtures/make_gguf_export_goldens.py
// records its logits for the tiny Llama exported as F32 and Q8_0), llama.cpp itself (fixtures/
// make_llamacpp_goldens.py, through llama-cpp-python: F32, F16, Q8_0, Q4_0) and ours reading the same
// file. Equal logits mean the names, the Q/K permutation, the dims, the metadata and the blocks mean the
// same thing to all three.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

@Suite struct GGUFExportLogitsTests {
  /// The tiny Llama exported as `type`, loaded back by our engine: its logits for `ids` (ids × vocab) and the vocab.
  static func logitsOfOurExport(_ type: GGMLType, ids: [Int32]) throws -> ([Float], Int) {
    let dir = NSTemporaryDirectory() + "espalier-gguf-logits-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    _ = try GGUFExport.export(try Checkpoint.open(fixturePath("tiny-llama")), to: dir + "/t.gguf", type: type)
    let model = try LlamaModel.load(dir + "/t.gguf")
    let vocab = model.config.vocabSize
    let runner = LlamaRunner(model: model, B: 1, T: ids.count)
    var logits = [Float](repeating: 0, count: ids.count * vocab)
    _ = try runner.forward(tokens: ids, targets: Array(ids.dropFirst()) + [0], prepareBackward: false) { n, row in
      for j in 0..<row.count { logits[n * vocab + j] = row[j] }
    }
    return (logits, vocab)
  }

  @Test(arguments: [("f32", GGMLType.f32), ("q8_0", GGMLType.q8_0)])
  func transformersComputesOurLogitsFromOurGGUF(name: String, type: GGMLType) throws {
    let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("gguf/export_goldens.json")))
    let golden = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let ids = try #require(golden["ids"] as? [Int]).map { Int32($0) }
    let expected = try #require(((golden["cases"] as? [String: Any])?[name] as? [String: Any])?["logits"] as? [[Double]])
    let (logits, vocab) = try Self.logitsOfOurExport(type, ids: ids)
    #expect(expected.count == ids.count && expected.allSatisfy { $0.count == vocab })
    let theirs = expected.flatMap { $0.map(Float.init) }
    #expect(maxAbsDiff(logits, theirs) < 1e-4, "\(name)")
  }

  /// llama.cpp loads our exact files (the golden records their sha256) and computes our logits. With F32
  /// weights (and its KV cache set to F32) it computes in f32 like us: within 1e-4. With F16 weights it
  /// rounds the activations to F16, and with Q8_0/Q4_0 weights it quantises them to Q8_0 blocks before
  /// each product, which we do not (we decode the weights and stay in f32): measured 0.002 (F16) and
  /// 0.065 (Q8_0, Q4_0) on a logit range of 7.4, so the bounds are 0.01 and 0.1.
  @Test(arguments: [("f32", GGMLType.f32, Float(1e-4)), ("f16", .f16, 0.01), ("q8_0", .q8_0, 0.1), ("q4_0", .q4_0, 0.1)])
  func llamaCppComputesOurLogitsFromOurGGUF(name: String, type: GGMLType, bound: Float) throws {
    let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("gguf/llamacpp_goldens.json")))
    let golden = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let ids = try #require(golden["ids"] as? [Int]).map { Int32($0) }
    let load = try #require((golden["loads"] as? [String: Any])?[name] as? [String: Any])
    let expected = try #require(load["logits"] as? [[Double]])
    // GGMLQuantizerTests.llamaCppReadOurExactFiles checks that this export is the file llama.cpp read.
    let (logits, vocab) = try Self.logitsOfOurExport(type, ids: ids)
    #expect(load["n_vocab"] as? Int == vocab)
    let theirs = expected.flatMap { $0.map(Float.init) }
    #expect(theirs.count == logits.count)
    #expect(maxAbsDiff(logits, theirs) <= bound, "\(name): \(maxAbsDiff(logits, theirs))")
  }
}
