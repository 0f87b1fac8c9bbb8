// `espalier eval`: perplexity over non-overlapping windows of a text, and multiple-choice scoring by
// summed log-likelihood (lm-eval's acc and acc_norm), on the CPU engine.

import Formats

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

public enum Evaluate {
  /// Perplexity over non-overlapping windows of `seqLen` tokens (the remainder after the last full
  /// window is dropped, as Wanda's evaluation does; a text shorter than one window is one window).
  public static func perplexity(
    model: LlamaModel, tokens all: [Int32], seqLen: Int, limit: Int? = nil, batchSize: Int = 1,
    progress: ((Int, Int) -> Void)? = nil
  ) throws(SurgeryError) -> PerplexityReport {
    let length = min(seqLen, all.count)
    guard length >= 2 else { throw .textTooShort(tokens: all.count) }
    var windows = all.count / length
    if let limit { windows = min(windows, limit) }
    var total = 0.0
    var counted = 0
    var done = 0
    var runners: [Int: LlamaRunner] = [:]
    while done < windows {
      let b = min(batchSize, windows - done)
      let runner = runners[b] ?? LlamaRunner(model: model, B: b, T: length - 1, training: false)
      runners[b] = runner
      var inputs: [Int32] = [], targets: [Int32] = []
      for w in done..<(done + b) {
        let window = all[(w * length)..<((w + 1) * length)]
        inputs += window.dropLast()
        targets += window.dropFirst()
      }
      let result = try runner.forward(tokens: inputs, targets: targets)
      total += Double(result.loss) * Double(result.count)
      counted += result.count
      done += b
      progress?(done, windows)
    }
    return PerplexityReport(windows: windows, seqLen: length, tokens: counted, textTokens: all.count, nll: total / Double(counted))
  }

  /// Scores every choice as the summed log-probability of its tokens after the context's
  /// (context and choice are tokenized separately and concatenated, as lm-eval does).
  public static func multipleChoice(
    model: LlamaModel, tokenizer: Tokenizer, items: [ChoiceItem], progress: ((Int, Int) -> Void)? = nil
  ) throws(SurgeryError) -> ChoiceReport {
    var correct = 0, correctNorm = 0
    for (i, item) in items.enumerated() {
      let context = tokenizer.encode(item.context)
      var scores: [(ll: Double, norm: Double)] = []
      for choice in item.choices {
        let continuation = tokenizer.encode(choice)
        let sequence = context + continuation
        guard sequence.count >= 2, !continuation.isEmpty else {
          throw .emptyChoice(item: i)
        }
        let inputs = Array(sequence.dropLast())
        // Only the choice's tokens are scored.
        let targets = (1..<sequence.count).map { $0 >= context.count ? sequence[$0] : Int32(-1) }
        let runner = LlamaRunner(model: model, B: 1, T: inputs.count, training: false)
        let result = try runner.forward(tokens: inputs, targets: targets)
        let ll = -Double(result.loss) * Double(result.count)
        scores.append((ll, ll / Double(max(1, choice.utf8.count))))
      }
      if scores.indices.max(by: { scores[$0].ll < scores[$1].ll }) == item.label { correct += 1 }
      if scores.indices.max(by: { scores[$0].norm < scores[$1].norm }) == item.label { correctNorm += 1 }
      progress?(i + 1, items.count)
    }
    let n = Double(max(1, items.count))
    return ChoiceReport(items: items.count, accuracy: Double(correct) / n, normalizedAccuracy: Double(correctNorm) / n)
  }
}

import Foundation
