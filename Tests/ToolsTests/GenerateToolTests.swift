// espalier-generate as a binary: greedy tokens against transformers' generate (fixtures/generate/
// greedy.json) on the tiny fixture in each checkpoint format, and on the real SmolLM2 GGUF; the streamed
// text; sampling's determinism; refusals.

import Foundation
import Testing

@Suite struct GenerateToolTests {
  static func temporaryDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-generate-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
  }

  struct Case {
    var key: String, prompt: String, promptIDs: [Int], generated: [Int], maxNewTokens: Int, stoppedAtEOS: Bool, decoded: String
  }

  static func golden(_ key: String) throws -> Case {
    let data = try Data(contentsOf: URL(fileURLWithPath: Tools.fixtures + "/generate/greedy.json"))
    let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let c = try #require((root["cases"] as? [[String: Any]])?.first { $0["key"] as? String == key })
    return Case(
      key: key, prompt: try #require(c["prompt_text"] as? String), promptIDs: try #require(c["prompt_ids"] as? [Int]),
      generated: try #require(c["generated_ids"] as? [Int]), maxNewTokens: try #require(c["max_new_tokens"] as? Int),
      stoppedAtEOS: try #require(c["stopped_at_eos"] as? Bool), decoded: try #require(c["decoded"] as? String))
  }

  static func generate(_ model: String, _ c: Case, _ extra: [String] = []) throws -> [String: Any] {
    let r = try Tools.run("espalier-generate", [model, "--prompt", c.prompt, "--max-tokens", "\(c.maxNewTokens)", "--json"] + extra)
    #expect(r.status == 0, "\(r.stderr)")
    return try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
  }

  @Test func greedyTokensMatchTransformersInEveryFormat() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let tiny = Tools.fixtures + "/tiny-llama"
    let compressed = dir + "/compressed", bf16 = dir + "/bf16"
    #expect(try Tools.run("espalier-convert", [tiny, compressed, "--compress"]).status == 0)
    #expect(try Tools.run("espalier-convert", [tiny, bf16, "--dtype", "bf16"]).status == 0)
    let c = try Self.golden("tiny.text")
    // The golden ran with EOS disabled, so --ignore-eos here.
    for model in [tiny, compressed] {
      let o = try Self.generate(model, c, ["--ignore-eos"])
      #expect(o["prompt_ids"] as? [Int] == c.promptIDs, "\(model)")
      #expect(o["generated_ids"] as? [Int] == c.generated, "\(model)")
      #expect(o["stop"] as? String == "max_tokens")
    }
    // BF16 weights are other weights: only the run itself is checked.
    let o = try Self.generate(bf16, c, ["--ignore-eos"])
    #expect((o["generated_ids"] as? [Int])?.count == c.maxNewTokens)
  }

  static let gguf: String = {
    var url = URL(fileURLWithPath: Tools.fixtures)
    url.deleteLastPathComponent()
    return url.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path
  }()

  @Test(.enabled(if: FileManager.default.fileExists(atPath: gguf), "models/SmolLM2-135M-Instruct.Q4_1.gguf is absent: run `make test`"))
  func smolLM2GreedyTokensMatchTransformers() throws {
    for key in ["smollm2.capital", "smollm2.fibonacci", "smollm2.chatml"] {
      let c = try Self.golden(key)
      let o = try Self.generate(Self.gguf, c)
      #expect(o["prompt_ids"] as? [Int] == c.promptIDs, "\(key)")
      #expect(o["generated_ids"] as? [Int] == c.generated, "\(key)")
      #expect(o["stop"] as? String == (c.stoppedAtEOS ? "eos" : "max_tokens"), "\(key)")
      // The text leaves out the stop token.
      let shown = c.stoppedAtEOS ? c.decoded.replacingOccurrences(of: "<|im_end|>", with: "") : c.decoded
      #expect(o["text"] as? String == shown, "\(key)")
    }
    // Streamed: the same text on stdout, the timing on stderr.
    let c = try Self.golden("smollm2.chatml")
    let r = try Tools.run("espalier", ["generate", Self.gguf, "--prompt", c.prompt, "--max-tokens", "\(c.maxNewTokens)"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stdout == "The answer is 4.\n")
    #expect(r.stderr.contains("stopped: end-of-sequence token"))
    #expect(r.stderr.contains("memory plan (generate)"))
  }

  @Test func samplingIsSeededAndFlagsAreChecked() throws {
    let tiny = Tools.fixtures + "/tiny-llama"
    func sample(_ seed: Int) throws -> [Int] {
      let r = try Tools.run(
        "espalier-generate", [tiny, "--prompt", "Once", "--max-tokens", "16", "--ignore-eos", "--temperature", "1.5", "--top-p", "0.9",
          "--seed", "\(seed)", "--json"])
      #expect(r.status == 0, "\(r.stderr)")
      let o = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
      return try #require(o["generated_ids"] as? [Int])
    }
    let a = try sample(1)
    #expect(a.count == 16)
    #expect(a == (try sample(1)))
    #expect(a != (try sample(2)))

    for bad in [["--top-p", "0"], ["--temperature", "-1"], ["--max-tokens", "0"], ["--top-k", "-2"]] {
      let r = try Tools.run("espalier-generate", [tiny, "--prompt", "x"] + bad)
      #expect(r.status == 64, "\(bad): \(r.stderr)")
    }
    #expect(try Tools.run("espalier-generate", [tiny]).status == 64)  // no prompt
    // More positions than the model has (the fixture's max_position_embeddings).
    let long = try Tools.run("espalier-generate", [tiny, "--prompt", "x", "--max-tokens", "100000"])
    #expect(long.status == 64)
    #expect(long.stderr.contains("max_position_embeddings"))
    let missing = try Tools.run("espalier-generate", ["/nonexistent/model", "--prompt", "x"])
    #expect(missing.status == 2)
    #expect(missing.stderr.contains("/nonexistent/model"))
    // A budget too small for the plan: exit 3 before any weight is read.
    let small = try Tools.run("espalier-generate", [tiny, "--prompt", "x", "--max-memory", "1MB"])
    #expect(small.status == 3)
  }
}
