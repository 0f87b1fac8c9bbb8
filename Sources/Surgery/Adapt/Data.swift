// Training windows from records (Formats' Corpus), and the seeded order they are drawn in.
//
// Text records are joined into one token stream, each document followed by EOS, and cut into windows of
// T + 1 tokens with stride T: inputs are the first T, targets the last T (every token is predicted once).
// Alpaca records become one window each: prompt (the Stanford Alpaca template) + output + EOS, the loss on
// output and EOS only (prompt targets ignored), truncated to T + 1 tokens. Short windows are padded with
// EOS inputs and ignored (−1) targets. Prompt and output are tokenised separately, so the boundary between
// them is exactly where the template ends.

import Formats

public struct TrainingWindow: Equatable, Sendable {
  /// T token ids.
  public var inputs: [Int32]
  /// T next-token targets; −1 = not trained on.
  public var targets: [Int32]
  public var targetCount: Int { targets.reduce(0) { $1 >= 0 ? $0 + 1 : $0 } }

  public init(inputs: [Int32], targets: [Int32]) {
    self.inputs = inputs
    self.targets = targets
  }
}

public enum AlpacaTemplate {
  public static func prompt(instruction: String, input: String) -> String {
    if input.isEmpty {
      return "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        + "### Instruction:\n\(instruction)\n\n### Response:\n"
    }
    return "Below is an instruction that describes a task, paired with an input that provides further context. "
      + "Write a response that appropriately completes the request.\n\n"
      + "### Instruction:\n\(instruction)\n\n### Input:\n\(input)\n\n### Response:\n"
  }

  /// (ids, labels) of one example: labels are −1 over the prompt, then the output's ids and EOS.
  public static func tokenize(instruction: String, input: String, output: String, tokenizer: Tokenizer, eos: Int32) -> ([Int32], [Int32]) {
    let prompt = tokenizer.encode(prompt(instruction: instruction, input: input))
    let response = tokenizer.encode(output) + [eos]
    return (prompt + response, [Int32](repeating: -1, count: prompt.count) + response)
  }
}

public struct TrainingData: Sendable {
  public var windows: [TrainingWindow]
  /// Alpaca examples whose prompt alone filled the window (nothing left to train on), skipped.
  public var skipped: Int
  public var targetTokens: Int { windows.reduce(0) { $0 + $1.targetCount } }

  public init(windows: [TrainingWindow], skipped: Int = 0) {
    self.windows = windows
    self.skipped = skipped
  }

  public init(records: [TrainingRecord], tokenizer: Tokenizer, length T: Int, eos: Int32) {
    var stream: [Int32] = []
    var windows: [TrainingWindow] = []
    var skipped = 0
    for record in records {
      switch record {
      case .text(let text):
        stream += tokenizer.encode(text)
        stream.append(eos)
      case .instruction(let instruction, let input, let output):
        let (ids, labels) = AlpacaTemplate.tokenize(instruction: instruction, input: input, output: output, tokenizer: tokenizer, eos: eos)
        let n = min(ids.count, T + 1)
        let window = Self.window(Array(ids[0..<(n - 1)]), Array(labels[1..<n]), T: T, pad: eos)
        if window.targetCount == 0 { skipped += 1 } else { windows.append(window) }
      }
    }
    var start = 0
    while stream.count - start >= 2 {
      let end = min(start + T + 1, stream.count)
      windows.append(Self.window(Array(stream[start..<(end - 1)]), Array(stream[(start + 1)..<end]), T: T, pad: eos))
      start += T
    }
    self.init(windows: windows, skipped: skipped)
  }

  static func window(_ inputs: [Int32], _ targets: [Int32], T: Int, pad: Int32) -> TrainingWindow {
    TrainingWindow(
      inputs: inputs + [Int32](repeating: pad, count: T - inputs.count),
      targets: targets + [Int32](repeating: -1, count: T - targets.count))
  }
}

/// Where a run is in its data: epoch e visits the windows in a permutation drawn from (seed, e), so the
/// position (epoch, index) alone, with the seed, restores the order on resume.
public struct DataCursor: Equatable, Sendable {
  public var epoch = 0
  public var index = 0
  public init(epoch: Int = 0, index: Int = 0) {
    self.epoch = epoch
    self.index = index
  }
}

public struct WindowOrder {
  public let count: Int
  public let seed: UInt64
  private var cachedEpoch = -1
  private var permutation: [Int] = []

  public init(count: Int, seed: UInt64) {
    self.count = count
    self.seed = seed
  }

  /// Fisher–Yates with SplitMix64 seeded by (seed, epoch).
  public static func permutation(count: Int, seed: UInt64, epoch: Int) -> [Int] {
    var random = SplitMix64(seed: seed ^ (UInt64(epoch) &* 0xD1B5_4A32_D192_ED03))
    var p = Array(0..<count)
    if count > 1 {
      for i in stride(from: count - 1, to: 0, by: -1) { p.swapAt(i, Int(random.next() % UInt64(i + 1))) }
    }
    return p
  }

  /// The next `n` window indices from `cursor`, moving it (into the next epoch when one runs out).
  public mutating func take(_ n: Int, from cursor: inout DataCursor) -> [Int] {
    var out: [Int] = []
    while out.count < n {
      if cursor.index >= count {
        cursor.epoch += 1
        cursor.index = 0
      }
      if cachedEpoch != cursor.epoch {
        permutation = Self.permutation(count: count, seed: seed, epoch: cursor.epoch)
        cachedEpoch = cursor.epoch
      }
      out.append(permutation[cursor.index])
      cursor.index += 1
    }
    return out
  }
}
