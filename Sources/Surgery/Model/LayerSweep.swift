// Many token sequences through the model block by block ("layer-major"): the hidden states of all of
// them enter block l before any enters block l+1, so a streamed model reads each block once per sweep
// instead of once per batch. Layer-sequential calibration needs exactly this order (SparseGPT's driver),
// and scoring a text gets it for free. The hidden states live in memory up to `maxMemory` bytes, in a
// mapped temporary file beyond (ScratchFloats).

import Formats

public final class LayerSweep {
  let model: LlamaModel
  let sequences: [[Int32]]
  /// Hidden states (length × hidden floats) of sequence i start at offsets[i].
  let offsets: [Int]
  let hidden: ScratchFloats
  /// Batches: runs of consecutive sequences of equal length, at most `batch` long.
  let groups: [Range<Int>]
  private var runners: [[Int]: LlamaRunner] = [:]
  private let scratch: UnsafeMutablePointer<Float>
  /// Whether the hidden states went to a temporary file.
  public var spilled: Bool { hidden.spilled }
  public var hiddenBytes: Int { hidden.count * 4 }

  public init(model: LlamaModel, sequences: [[Int32]], batch: Int, maxMemory: Int, temporaryDirectory: String) throws(SurgeryError) {
    let C = model.config.hiddenSize
    self.model = model
    self.sequences = sequences
    var offsets: [Int] = []
    var total = 0
    for s in sequences {
      offsets.append(total)
      total += s.count * C
    }
    self.offsets = offsets
    var groups: [Range<Int>] = []
    var start = 0
    while start < sequences.count {
      var end = start + 1
      while end < sequences.count && end - start < max(1, batch) && sequences[end].count == sequences[start].count { end += 1 }
      groups.append(start..<end)
      start = end
    }
    self.groups = groups
    do { hidden = try ScratchFloats(count: total, maxMemory: maxMemory, directory: temporaryDirectory) } catch { throw .format(error) }
    let largest = groups.map { $0.reduce(0) { $0 + sequences[$1].count } }.max() ?? 0
    scratch = .allocate(capacity: max(1, largest * C))
  }

  deinit { scratch.deallocate() }

  /// A scoring runner for `b` sequences of `T` tokens (the last two shapes are kept).
  func runner(_ b: Int, _ T: Int) -> LlamaRunner {
    if let r = runners[[b, T]] { return r }
    if runners.count >= 2 { runners.removeAll() }
    let r = LlamaRunner(model: model, B: b, T: T, training: false)
    runners[[b, T]] = r
    return r
  }

  /// The embedding rows of every sequence: the input of block 0.
  public func embed() throws(SurgeryError) {
    for (i, s) in sequences.enumerated() {
      try s.withUnsafeBufferPointer { (t) throws(SurgeryError) in try model.embed(tokens: t.baseAddress!, N: s.count, into: hidden.base + offsets[i]) }
    }
  }

  /// Runs block l over every sequence: in place when `advance` (the states move on to block l+1), else
  /// into scratch (for what the block's layers record on the way).
  public func run(block l: Int, advance: Bool) throws(SurgeryError) {
    try model.prepare(block: l)
    for group in groups {
      let p = hidden.base + offsets[group.lowerBound]
      try runner(group.count, sequences[group.lowerBound].count).forwardBlock(l, input: p, output: advance ? p : scratch)
    }
  }

  /// After every block: the summed NLL and the count of scored targets of each sequence (targets[i] has
  /// one entry per token of sequence i; −1 = not scored).
  public func score(targets: [[Int32]]) throws(SurgeryError) -> [(nll: Double, count: Int)] {
    var result: [(nll: Double, count: Int)] = []
    for group in groups {
      let T = sequences[group.lowerBound].count
      let r = runner(group.count, T)
      _ = try r.forwardHead(input: hidden.base + offsets[group.lowerBound], targets: group.flatMap { targets[$0] })
      let nll = r.tokenNLL
      for (k, i) in group.enumerated() {
        var sum = 0.0
        for t in 0..<T where targets[i][t] >= 0 { sum += Double(nll[k * T + t]) }
        result.append((sum, targets[i].filter { $0 >= 0 }.count))
      }
    }
    return result
  }
}
