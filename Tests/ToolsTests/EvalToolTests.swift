// espalier-eval as a binary on the tiny fixture model.

import Foundation
import Testing

@Suite struct EvalToolTests {
  @Test func perplexityReport() throws {
    let r = try Tools.run("espalier-eval", [Tools.fixtures + "/tiny-llama", "--text", Tools.fixtures + "/tokenizer/prose.txt",
      "--seq-len", "64", "--limit", "3", "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    let o = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    #expect(o["windows"] as? Int == 3)
    #expect(o["tokens"] as? Int == 3 * 63)
    let nll = try #require(o["nll"] as? Double), ppl = try #require(o["perplexity"] as? Double)
    #expect(abs(exp(nll) - ppl) / ppl < 1e-3)
    // The tiny model is random: its perplexity is near its vocabulary size, not near 1.
    #expect(ppl > 100)
  }

  @Test func multipleChoiceReport() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-eval-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent("mc.jsonl").path
    try """
      {"context": "Hello", "choices": [" world", " there"], "label": 0}

      {"context": "The", "choices": [" cat", " dog", " end"], "label": 2}
      """.write(toFile: path, atomically: true, encoding: .utf8)
    let r = try Tools.run("espalier", ["eval", Tools.fixtures + "/tiny-llama", "--choices", path, "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    let o = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    #expect(o["items"] as? Int == 2)
    #expect(o["acc"] != nil && o["acc_norm"] != nil)
    try "{\"context\": \"x\", \"choices\": [\" a\"], \"label\": 3}\n".write(toFile: path, atomically: true, encoding: .utf8)
    let bad = try Tools.run("espalier-eval", [Tools.fixtures + "/tiny-llama", "--choices", path])
    #expect(bad.status == 2)
    #expect(bad.stderr.contains("line 1"))
  }

  @Test func usage() throws {
    let both = try Tools.run("espalier-eval", [Tools.fixtures + "/tiny-llama", "--text", "a", "--choices", "b"])
    #expect(both.status == 64)
    let help = try Tools.run("espalier-eval", ["--help"])
    for flag in ["--text", "--choices", "--seq-len", "--limit", "--batch-size", "--json", "2048"] { #expect(help.stdout.contains(flag)) }
  }
}
