// `espalier generate`: text continuation with a KV cache (Decoder), greedy or sampled.
//
// Sampling follows transformers' logits processors, in their order: logits / temperature, then top-k
// (keep the k largest; ties with the k-th kept), then top-p (keep the smallest set of most probable
// tokens whose probability reaches p; at least one), then a draw from the renormalised softmax.
// Temperature 0 is greedy: the first index of the largest logit, as torch.argmax.

import Foundation

public struct SamplingOptions: Sendable, Equatable {
  /// 0: greedy.
  public var temperature: Float = 0
  /// 1: no nucleus filtering.
  public var topP: Float = 1
  /// 0: no top-k filtering.
  public var topK = 0
  public var seed: UInt64 = 0
  public init() {}
}

public struct Sampler {
  public let options: SamplingOptions
  var random: SplitMix64

  public init(_ options: SamplingOptions) {
    self.options = options
    random = SplitMix64(seed: options.seed)
  }

  /// The first index of the largest value (NaN never wins).
  public static func argmax(_ logits: [Float]) -> Int32 {
    var best = 0
    for i in logits.indices where logits[i] > logits[best] || (logits[best].isNaN && !logits[i].isNaN) { best = i }
    return Int32(best)
  }

  /// The tokens sampling may pick and their probabilities (summing to 1), after temperature, top-k and
  /// top-p; most probable first.
  public func distribution(_ logits: [Float]) -> [(token: Int32, p: Double)] {
    let t = Double(options.temperature)
    var order = logits.indices.filter { !logits[$0].isNaN }.sorted { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
    if options.topK > 0, options.topK < order.count {
      let kth = logits[order[options.topK - 1]]
      order = order.filter { logits[$0] >= kth }
    }
    guard let top = order.first else { return [] }
    let m = Double(logits[top]) / t
    var weights = order.map { Foundation.exp(Double(logits[$0]) / t - m) }
    var total = weights.reduce(0, +)
    if options.topP < 1 {
      var kept = 0, mass = 0.0
      while kept < weights.count && (kept == 0 || mass < Double(options.topP) * total) {
        mass += weights[kept]
        kept += 1
      }
      order = Array(order.prefix(kept))
      weights = Array(weights.prefix(kept))
      total = mass
    }
    return zip(order, weights).map { (Int32($0), $1 / total) }
  }

  /// The next token after `logits`.
  public mutating func next(_ logits: [Float]) -> Int32 {
    guard options.temperature > 0 else { return Sampler.argmax(logits) }
    let choices = distribution(logits)
    guard let last = choices.last else { return Sampler.argmax(logits) }
    let u = Double(random.next() >> 11) * 0x1p-53
    var cumulative = 0.0
    for c in choices {
      cumulative += c.p
      if u < cumulative { return c.token }
    }
    return last.token
  }
}

public struct GenerationOptions: Sendable {
  public var maxTokens = 128
  public var sampling = SamplingOptions()
  /// Generation stops after producing one of these (it is returned as the last token).
  public var stopTokens: Set<Int32> = []
  public init() {}
}

public struct GenerationResult: Sendable {
  public enum Stop: Sendable, Equatable {
    case stopToken(Int32)
    case maxTokens
  }
  public var promptTokens: Int
  /// The new tokens, the stop token included when one ended the generation.
  public var tokens: [Int32]
  public var stop: Stop
  /// Seconds to feed the prompt, and to produce every token after the first.
  public var promptSeconds: Double
  public var decodeSeconds: Double
}

public enum Generate {
  /// Feeds `prompt` and produces up to `maxTokens` tokens, calling `onToken` with each as it is chosen.
  public static func run(
    _ decoder: Decoder, prompt: [Int32], options: GenerationOptions, onToken: (Int32) -> Void = { _ in }
  ) throws(SurgeryError) -> GenerationResult {
    guard prompt.count + options.maxTokens - 1 <= decoder.cache.capacity else {
      throw .invalidRequest("the prompt (\(prompt.count) tokens) and --max-tokens \(options.maxTokens) need \(prompt.count + options.maxTokens - 1) positions; the decoder holds \(decoder.cache.capacity)")
    }
    decoder.reset()
    var sampler = Sampler(options.sampling)
    let clock = ContinuousClock()
    let begin = clock.now
    var logits = try decoder.feed(prompt)
    let prompted = clock.now
    var tokens: [Int32] = []
    var stop = GenerationResult.Stop.maxTokens
    while tokens.count < options.maxTokens {
      let token = sampler.next(logits)
      tokens.append(token)
      onToken(token)
      if options.stopTokens.contains(token) {
        stop = .stopToken(token)
        break
      }
      if tokens.count == options.maxTokens { break }
      logits = try decoder.feed([token])
    }
    func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }
    return GenerationResult(
      promptTokens: prompt.count, tokens: tokens, stop: stop, promptSeconds: seconds(prompted - begin),
      decodeSeconds: seconds(clock.now - prompted))
  }
}
