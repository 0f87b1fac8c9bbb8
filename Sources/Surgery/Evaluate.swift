// `espalier eval`: perplexity over non-overlapping windows of a text, and multiple-choice scoring by
// summed log-likelihood (lm-eval's acc and acc_norm), on the CPU engine.

import Formats
import Foundation

public struct PerplexityReport: Sendable {
  public var windows: Int
  public var seqLen: Int
  /// Predicted tokens: seqLen − 1 per window (the first token of a window has no context).
  public var tokens: Int
  public var textTokens: Int
  /// Mean negative log-likelihood per predicted token (nats), and its exponential.
  public var nll: Double
  public var perplexity: Double { exp(nll) }
}

public struct ChoiceReport: Sendable {
  public var items: Int
  /// Fraction whose highest summed log-likelihood is the label.
  public var accuracy: Double
  /// The same with each choice's log-likelihood divided by its length in UTF-8 bytes (lm-eval acc_norm).
  public var normalizedAccuracy: Double
}

/// How an evaluation runs: sequences per block forward, and how many go through the model per sweep
/// (a streamed model reads every block once per sweep; their hidden states stay in memory up to
/// `maxMemory` bytes, in a temporary file beyond).
public struct EvaluationOptions: Sendable {
  public var batchSize = 1
  public var sweepSequences = 64
  public var maxMemory = 1_000_000_000
  public var temporaryDirectory = "/tmp"
  /// The ranks sharing the windows (MPI), or one process.
  public var cluster = Cluster.single
  public init() {}
}

public enum Evaluate {
  /// Perplexity over non-overlapping windows of `seqLen` tokens (the remainder after the last full
  /// window is dropped, as Wanda's evaluation does; a text shorter than one window is one window).
  public static func perplexity(
    model: LlamaModel, tokens all: [Int32], seqLen: Int, limit: Int? = nil, batchSize: Int = 1,
    options: EvaluationOptions = EvaluationOptions(), progress: ((Int, Int) -> Void)? = nil
  ) throws(SurgeryError) -> PerplexityReport {
    let length = min(seqLen, all.count)
    guard length >= 2 else { throw .textTooShort(tokens: all.count) }
    var windows = all.count / length
    if let limit { windows = min(windows, limit) }
    // Per window: its summed NLL and scored tokens. Under MPI each rank fills its share (whole batches)
    // and one sum gives every rank all of them; the total is then summed in window order, as one
    // process sums it, so the perplexity is the same to the bit on any number of ranks.
    let mine = options.cluster.share(of: windows, inGroupsOf: batchSize)
    var slots = [Double](repeating: 0, count: 2 * windows)
    var done = mine.lowerBound
    let perSweep = max(batchSize, options.sweepSequences / batchSize * batchSize)
    while done < mine.upperBound {
      let n = min(perSweep, mine.upperBound - done)
      let slices = (done..<(done + n)).map { all[($0 * length)..<(($0 + 1) * length)] }
      let scores = try sweep(
        model, sequences: slices.map { Array($0.dropLast()) }, targets: slices.map { Array($0.dropFirst()) }, batchSize: batchSize,
        options: options)
      for (k, s) in scores.enumerated() { (slots[2 * (done + k)], slots[2 * (done + k) + 1]) = (s.nll, Double(s.count)) }
      done += n
      progress?(done - mine.lowerBound, mine.count)
    }
    try options.cluster.sum(&slots)
    var total = 0.0
    var counted = 0
    for w in 0..<windows {
      total += slots[2 * w]
      counted += Int(slots[2 * w + 1])
    }
    return PerplexityReport(windows: windows, seqLen: length, tokens: counted, textTokens: all.count, nll: total / Double(counted))
  }

  /// Every block over `sequences`, then the head against `targets`: one layer-major sweep.
  static func sweep(
    _ model: LlamaModel, sequences: [[Int32]], targets: [[Int32]], batchSize: Int, options: EvaluationOptions
  ) throws(SurgeryError) -> [(nll: Double, count: Int)] {
    for s in sequences { for t in s where t < 0 || Int(t) >= model.config.vocabSize { throw .invalidToken(id: Int(t), vocabSize: model.config.vocabSize) } }
    let sweep = try LayerSweep(
      model: model, sequences: sequences, batch: batchSize, maxMemory: options.maxMemory, temporaryDirectory: options.temporaryDirectory)
    try sweep.embed()
    for l in 0..<model.config.layers { try sweep.run(block: l, advance: true) }
    return try sweep.score(targets: targets)
  }

  /// Scores every choice as the summed log-probability of its tokens after the context's
  /// (context and choice are tokenized separately and concatenated, as lm-eval does).
  public static func multipleChoice(
    model: LlamaModel, tokenizer: Tokenizer, items: [ChoiceItem], options: EvaluationOptions = EvaluationOptions(),
    progress: ((Int, Int) -> Void)? = nil
  ) throws(SurgeryError) -> ChoiceReport {
    var correct = 0, correctNorm = 0
    // Under MPI each rank scores its share of the items; the two counts are summed.
    let mine = options.cluster.share(of: items.count)
    var done = mine.lowerBound
    while done < mine.upperBound {
      // Whole items per sweep, up to sweepSequences choices (at least one item).
      var end = done
      var choices = 0
      while end < mine.upperBound && (end == done || choices + items[end].choices.count <= options.sweepSequences) {
        choices += items[end].choices.count
        end += 1
      }
      var sequences: [[Int32]] = [], targets: [[Int32]] = []
      for i in done..<end {
        let context = tokenizer.encode(items[i].context)
        for choice in items[i].choices {
          let continuation = tokenizer.encode(choice)
          let sequence = context + continuation
          guard sequence.count >= 2, !continuation.isEmpty else { throw .emptyChoice(item: i) }
          sequences.append(Array(sequence.dropLast()))
          // Only the choice's tokens are scored.
          targets.append((1..<sequence.count).map { $0 >= context.count ? sequence[$0] : Int32(-1) })
        }
      }
      let results = try sweep(model, sequences: sequences, targets: targets, batchSize: options.batchSize, options: options)
      var k = 0
      for i in done..<end {
        let item = items[i]
        let scores = item.choices.map { choice -> (ll: Double, norm: Double) in
          let ll = -results[k].nll
          k += 1
          return (ll, ll / Double(max(1, choice.utf8.count)))
        }
        if scores.indices.max(by: { scores[$0].ll < scores[$1].ll }) == item.label { correct += 1 }
        if scores.indices.max(by: { scores[$0].norm < scores[$1].norm }) == item.label { correctNorm += 1 }
        progress?(i + 1 - mine.lowerBound, mine.count)
      }
      done = end
    }
    var counts = [Double(correct), Double(correctNorm)]
    try options.cluster.sum(&counts)
    (correct, correctNorm) = (Int(counts[0]), Int(counts[1]))
    let n = Double(max(1, items.count))
    return ChoiceReport(items: items.count, accuracy: Double(correct) / n, normalizedAccuracy: Double(correctNorm) / n)
  }
}
