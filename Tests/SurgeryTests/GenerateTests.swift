// Decoding with a KV cache: cached attention against the definition, the decoder's logits against the
// full-sequence forward, greedy tokens against transformers' generate (fixtures/generate/greedy.json,
// made by fixtures/make_generate_goldens.py), and the sampler's filters and draws.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

/// The cases of fixtures/generate/greedy.json.
struct GreedyGolden {
  var key: String
  var promptText: String?
  var promptIDs: [Int32]
  var generatedIDs: [Int32]
  var maxNewTokens: Int
  var stoppedAtEOS: Bool
  var decoded: String

  static func load() throws -> [GreedyGolden] {
    let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("generate/greedy.json")))
    let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let cases = try #require(root["cases"] as? [[String: Any]])
    return try cases.map { c in
      GreedyGolden(
        key: try #require(c["key"] as? String), promptText: c["prompt_text"] as? String,
        promptIDs: try #require(c["prompt_ids"] as? [Int]).map(Int32.init),
        generatedIDs: try #require(c["generated_ids"] as? [Int]).map(Int32.init),
        maxNewTokens: try #require(c["max_new_tokens"] as? Int), stoppedAtEOS: try #require(c["stopped_at_eos"] as? Bool),
        decoded: try #require(c["decoded"] as? String))
    }
  }
}

@Suite struct GenerateTests {
  @Test func cachedAttentionMatchesTheDefinition() {
    let (T, H, KV, hd) = (7, 4, 2, 8)
    var rng = SplitMix64(seed: 3)
    func random(_ n: Int) -> [Float] { (0..<n).map { _ in rng.nextUnitFloat() * 2 - 1 } }
    let q = random(T * H * hd), k = random(T * KV * hd), v = random(T * KV * hd)
    let want = Attention.forwardNaive(q: q, k: k, v: v, B: 1, T: T, H: H, KV: KV, hd: hd)
    // Rows 0..<4 in one step, then 4..<6, then row 6 alone, each over the cache so far.
    var out = [Float](repeating: .nan, count: T * H * hd)
    var scores = [Float](repeating: 0, count: T * T)
    for (start, n) in [(0, 4), (4, 2), (6, 1)] {
      q.withUnsafeBufferPointer { q in
        out.withUnsafeMutableBufferPointer { o in
          CachedAttention.forward(
            out: o.baseAddress! + start * H * hd, q: q.baseAddress! + start * H * hd, keys: k, values: v, start: start, T: n,
            H: H, KV: KV, hd: hd, scores: &scores)
        }
      }
    }
    #expect(maxAbsDiff(out, want) < 1e-5)
  }

  @Test func decoderLogitsMatchTheFullForward() throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"), maxPositions: 32)
    let tokens: [Int32] = [5, 77, 300, 12, 9, 401, 33, 2, 250, 18, 64, 100, 7]
    let decoder = try Decoder(model: model, capacity: tokens.count, chunk: 4)
    // 9 prompt tokens (chunks of 4, 4, 1), then one token at a time.
    var fed = 9
    var logits = try decoder.feed(Array(tokens.prefix(fed)))
    while true {
      var full = [Float]()
      try LlamaRunner(model: model, B: 1, T: fed, training: false).forward(tokens: Array(tokens.prefix(fed))) { n, row in
        if n == fed - 1 { full = Array(row) }
      }
      #expect(maxAbsDiff(logits, full) < 1e-4, "after \(fed) tokens")
      guard fed < tokens.count else { break }
      logits = try decoder.feed([tokens[fed]])
      fed += 1
    }
    #expect(decoder.length == tokens.count)
    #expect(throws: SurgeryError.self) { try decoder.feed([1]) }
    #expect(throws: SurgeryError.self) { try Decoder(model: model, capacity: 33) }
  }

  @Test func streamedModelDecodesLikeTheResidentOne() throws {
    let resident = try LlamaModel.load(fixturePath("tiny-llama"), maxPositions: 24)
    let streamed = try LlamaModel.load(fixturePath("tiny-llama"), maxPositions: 24, residency: .streamed)
    var options = GenerationOptions()
    options.maxTokens = 12
    let prompt: [Int32] = [40, 41, 300, 7]
    let a = try Generate.run(try Decoder(model: resident, capacity: 16), prompt: prompt, options: options)
    let b = try Generate.run(try Decoder(model: streamed, capacity: 16), prompt: prompt, options: options)
    #expect(a.tokens == b.tokens)
    #expect(a.tokens.count == 12 && a.stop == .maxTokens)
  }

  @Test func greedyTokensMatchTransformersOnTheFixture() throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"), maxPositions: 64)
    let tokenizer = try Tokenizer.forCheckpoint(fixturePath("tiny-llama"))
    let cases = try GreedyGolden.load().filter { $0.key.hasPrefix("tiny.") }
    #expect(cases.count == 4)
    for c in cases {
      if let text = c.promptText { #expect(tokenizer.encodePrompt(text) == c.promptIDs, "\(c.key) prompt ids") }
      var options = GenerationOptions()
      options.maxTokens = c.maxNewTokens  // EOS disabled, as in the golden
      var streamed: [Int32] = []
      let r = try Generate.run(try Decoder(model: model, capacity: 64), prompt: c.promptIDs, options: options) { streamed.append($0) }
      #expect(r.tokens == c.generatedIDs, "\(c.key)")
      #expect(streamed == r.tokens)
      #expect(tokenizer.decode(r.tokens) == c.decoded, "\(c.key) text")
    }
  }

  @Test func generationStopsAtAStopTokenAndReturnsIt() throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"), maxPositions: 64)
    let c = try #require(try GreedyGolden.load().first { $0.key == "tiny.ids5" })
    // Its greedy continuation produces id 0 at step 6 (index 5): with 0 as a stop token it ends there.
    var options = GenerationOptions()
    options.maxTokens = 20
    options.stopTokens = [0]
    let r = try Generate.run(try Decoder(model: model, capacity: 64), prompt: c.promptIDs, options: options)
    let at = try #require(c.generatedIDs.firstIndex(of: 0))
    #expect(r.tokens == Array(c.generatedIDs.prefix(at + 1)))
    #expect(r.stop == .stopToken(0))
    options.maxTokens = 61  // 5 + 61 − 1 positions: one more than the decoder holds
    #expect(throws: SurgeryError.self) { try Generate.run(try Decoder(model: model, capacity: 64), prompt: c.promptIDs, options: options) }
  }

  @Test func samplerFiltersAsTransformersDoes() {
    let logits: [Float] = [0, 2, 1, -1, 2]
    #expect(Sampler.argmax(logits) == 1)  // the first of two equal maxima, as torch.argmax
    #expect(Sampler.argmax([.nan, 1, 3]) == 2)
    var o = SamplingOptions()
    o.temperature = 1
    let e = logits.map { exp(Double($0)) }
    let z = e.reduce(0, +)
    // No filter: the softmax, most probable first (ties by index).
    let all = Sampler(o).distribution(logits)
    #expect(all.map(\.token) == [1, 4, 2, 0, 3])
    for (t, p) in all { #expect(abs(p - e[Int(t)] / z) < 1e-12) }
    // top-k 3 keeps the three largest, renormalised.
    o.topK = 3
    let k3 = Sampler(o).distribution(logits)
    #expect(k3.map(\.token) == [1, 4, 2])
    #expect(abs(k3[2].p - e[2] / (e[1] + e[4] + e[2])) < 1e-12)
    // top-p: the smallest most-probable set reaching p. Tokens 1 and 4 hold 2·e²/z ≈ 0.78 of the mass.
    o.topK = 0
    o.topP = 0.7
    #expect(Sampler(o).distribution(logits).map(\.token) == [1, 4])
    o.topP = 0.8
    #expect(Sampler(o).distribution(logits).map(\.token) == [1, 4, 2])
    o.topP = 0.01
    #expect(Sampler(o).distribution(logits).map(\.token) == [1])  // at least one token
    // Temperature sharpens: at 0.5 the weights are exp(2·logit).
    o.topP = 1
    o.temperature = 0.5
    let sharp = Sampler(o).distribution(logits)
    let e2 = logits.map { exp(2 * Double($0)) }
    #expect(abs(sharp[0].p - e2[1] / e2.reduce(0, +)) < 1e-12)
  }

  @Test func samplingDrawsFollowTheDistributionAndTheSeed() {
    let logits: [Float] = [1, 0, 2, -0.5]
    var o = SamplingOptions()
    o.temperature = 1
    o.seed = 42
    var sampler = Sampler(o)
    let draws = 40_000
    var counts = [Int](repeating: 0, count: 4)
    for _ in 0..<draws { counts[Int(sampler.next(logits))] += 1 }
    let e = logits.map { exp(Double($0)) }
    let z = e.reduce(0, +)
    for i in 0..<4 {
      let p = e[i] / z
      // Within 5 standard deviations of the binomial count.
      let sd = (Double(draws) * p * (1 - p)).squareRoot()
      #expect(abs(Double(counts[i]) - Double(draws) * p) < 5 * sd, "token \(i): \(counts[i]) of \(draws), p = \(p)")
    }
    var again = Sampler(o), other = Sampler({ var x = o; x.seed = 43; return x }())
    var first = Sampler(o)
    let a = (0..<50).map { _ in first.next(logits) }
    #expect(a == (0..<50).map { _ in again.next(logits) })
    #expect(a != (0..<50).map { _ in other.next(logits) })
  }
}
