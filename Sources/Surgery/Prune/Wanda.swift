// Wanda (Sun et al. 2023, locuslab/wanda; algorithms.md §1.2-1.3): score S_ij = |W_ij| · sqrt(s_j), where
// s_j is the running mean over calibration sequences of Σ_tokens x_j² for the layer's input column j.

/// Per-input-column statistics of one linear layer, accumulated sequence by sequence as Wanda does:
/// s ← s·n/(n+b); n ← n + b; s += ‖X_batch[:, j]‖² / n, with b the number of sequences in the batch.
public final class WandaStatistics: CalibrationStatistic {
  /// Under MPI: each batch's column sums and sequence count, folded only in `reduce`.
  private var batches: [(sequences: Int, sums: [Double])]?

  /// `deferred`: keep each batch's sums for an exact fold across ranks (`reduce`) instead of folding now.
  public init(columns: Int, deferred: Bool = false) {
    batches = deferred ? [] : nil
    super.init(columns: columns, values: columns, scratch: columns * MemoryLayout<Double>.stride)
  }

  /// The running mean of Σ_tokens x_j² per column.
  public var scaler: [Double] { values }

  /// Adds a batch of `sequences` sequences whose tokens are the rows of x (tokens, columns).
  public func add(_ x: UnsafePointer<Float>, tokens: Int, sequences b: Int) {
    let (sums, columns) = (scratch.bindMemory(to: Double.self, capacity: self.columns), self.columns)
    sums.update(repeating: 0, count: columns)
    for t in 0..<tokens {
      let row = x + t * columns
      for j in 0..<columns {
        let v = Double(row[j])
        sums[j] += v * v
      }
    }
    if batches != nil {
      batches!.append((b, Array(UnsafeBufferPointer(start: sums, count: columns))))
      sequences += b
      return
    }
    fold(sequences: b) { j, total in sums[j] / total }
  }

  /// The fold of every batch of every rank in the global order, the same operations as `fold` on one
  /// process: ranks before this one arrive as `incoming`, this rank's batches continue it.
  override func reduce(on cluster: Cluster, before: Int, total: Int, to destination: Int? = nil) throws(SurgeryError) {
    guard let batches else { return }
    let values = buffer
    try cluster.orderedReduce(values, count: count, to: destination) { incoming, range in
      for (k, j) in range.enumerated() {
        var v = incoming?[k] ?? 0
        var n = before
        for batch in batches {
          let t = Double(n + batch.sequences)
          v = v * (Double(n) / t) + batch.sums[j] / t
          n += batch.sequences
        }
        values[j] = v
      }
    }
    self.batches = []
    sequences = total
  }
}

public enum Wanda {
  /// Scores of a row-major (rows, cols) weight.
  public static func scores(_ weight: UnsafePointer<Float>, rows: Int, cols: Int, statistics: WandaStatistics) -> [Float] {
    let norms = statistics.scaler.map { Float($0.squareRoot()) }
    var s = [Float](repeating: 0, count: rows * cols)
    for r in 0..<rows { for c in 0..<cols { s[r * cols + c] = abs(weight[r * cols + c]) * norms[c] } }
    return s
  }

  /// The mask (true = pruned): per output row for unstructured targets (`rowZeros` per row when given,
  /// else ⌊cols·ratio⌋), per group for N:M.
  public static func mask(
    _ weight: UnsafePointer<Float>, rows: Int, cols: Int, statistics: WandaStatistics, target: SparsityTarget, rowZeros: Int? = nil
  ) -> [Bool] {
    let s = scores(weight, rows: rows, cols: cols, statistics: statistics)
    return s.withUnsafeBufferPointer { p in
      if let rowZeros { return MaskSelection.perRow(p.baseAddress!, rows: rows, cols: cols, zeros: rowZeros) }
      switch target {
      case .unstructured(let ratio): return MaskSelection.perRow(p.baseAddress!, rows: rows, cols: cols, ratio: ratio)
      case .nm(let pattern): return MaskSelection.nm(p.baseAddress!, rows: rows, cols: cols, pattern: pattern)
      }
    }
  }
}
