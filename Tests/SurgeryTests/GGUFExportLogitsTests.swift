// Our GGUF output through two engines: transformers' GGUF loader (fixtures/make_gguf_export_goldens.py
// records its logits for the tiny Llama exported as F32 and Q8_0) and ours reading the same file. Equal
// logits mean the names, the Q/K permutation, the dims and the blocks mean the same thing to both.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

@Suite struct GGUFExportLogitsTests {
  @Test(arguments: [("f32", GGMLType.f32), ("q8_0", GGMLType.q8_0)])
  func transformersComputesOurLogitsFromOurGGUF(name: String, type: GGMLType) throws {
    let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("gguf/export_goldens.json")))
    let golden = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let ids = try #require(golden["ids"] as? [Int]).map { Int32($0) }
    let expected = try #require(((golden["cases"] as? [String: Any])?[name] as? [String: Any])?["logits"] as? [[Double]])
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
    #expect(expected.count == ids.count && expected.allSatisfy { $0.count == vocab })
    let theirs = expected.flatMap { $0.map(Float.init) }
    #expect(maxAbsDiff(logits, theirs) < 1e-4, "\(name)")
  }
}
