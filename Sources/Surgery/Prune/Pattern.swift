// What a pruning method is asked for, and how a mask is chosen from scores (algorithms.md §1.3, §2.3).
// Masks are Bool arrays over a row-major (rows, cols) weight with `true` = pruned, as in the references.
//
// - Unstructured at ratio s: Wanda prunes exactly floor(cols·s) per output row (stable: lower column
//   first on ties); magnitude uses one threshold per tensor, sort(|W|)[floor(numel·s)], pruning every
//   score <= it; SparseGPT one threshold per block of 128 columns (see SparseGPT.swift).
// - N:M: in every group of M consecutive input columns of a row, the N lowest scores are pruned (N is the
//   number of zeros, so 2:4 leaves two of every four weights).

public enum SparsityTarget: Equatable, Sendable, CustomStringConvertible {
  case unstructured(Double)
  case nm(NMPattern)

  public var description: String {
    switch self {
    case .unstructured(let s): return "unstructured \(s)"
    case .nm(let p): return p.description
    }
  }

  /// The fraction of zeros the target asks for.
  public var ratio: Double {
    switch self {
    case .unstructured(let s): return s
    case .nm(let p): return Double(p.n) / Double(p.m)
    }
  }
}

public enum MaskSelection {
  /// Per row, the floor(cols·ratio) lowest scores (stable: ties go to the lower column).
  public static func perRow(_ scores: UnsafePointer<Float>, rows: Int, cols: Int, ratio: Double) -> [Bool] {
    perRow(scores, rows: rows, cols: cols, zeros: Int((Double(cols) * ratio).rounded(.down)))
  }

  /// Per row, the `zeros` lowest scores (stable: ties go to the lower column).
  public static func perRow(_ scores: UnsafePointer<Float>, rows: Int, cols: Int, zeros: Int) -> [Bool] {
    var mask = [Bool](repeating: false, count: rows * cols)
    let k = min(cols, zeros)
    guard k > 0 else { return mask }
    var order = [Int](repeating: 0, count: cols)
    for r in 0..<rows {
      let row = scores + r * cols
      for c in 0..<cols { order[c] = c }
      order.sort { row[$0] < row[$1] || (row[$0] == row[$1] && $0 < $1) }
      for c in order.prefix(k) { mask[r * cols + c] = true }
    }
    return mask
  }

  /// In each group of m consecutive columns of each row, the n lowest scores (ties: lower column).
  public static func nm(_ scores: UnsafePointer<Float>, rows: Int, cols: Int, pattern: NMPattern) -> [Bool] {
    var mask = [Bool](repeating: false, count: rows * cols)
    for r in 0..<rows {
      for g in stride(from: 0, to: cols - cols % pattern.m, by: pattern.m) {
        selectLowest(scores + r * cols + g, count: pattern.m, n: pattern.n) { mask[r * cols + g + $0] = true }
      }
    }
    return mask
  }

  /// Calls `mark(i)` for the n lowest of `count` values (ties: lower index).
  @inline(__always)
  static func selectLowest(_ values: UnsafePointer<Float>, count: Int, n: Int, mark: (Int) -> Void) {
    var chosen = [Bool](repeating: false, count: count)
    for _ in 0..<min(n, count) {
      var best = -1
      for i in 0..<count where !chosen[i] && (best < 0 || values[i] < values[best]) { best = i }
      chosen[best] = true
      mark(best)
    }
  }

  /// One threshold for the whole tensor: t = sort(scores)[floor(n·ratio)], prune scores <= t.
  public static func perTensor(_ scores: UnsafePointer<Float>, count: Int, ratio: Double) -> [Bool] {
    let k = Int((Double(count) * ratio).rounded(.down))
    guard k > 0, count > 0 else { return [Bool](repeating: false, count: count) }
    let sorted = UnsafeBufferPointer(start: scores, count: count).sorted()
    let threshold = sorted[min(k, count - 1)]
    return (0..<count).map { scores[$0] <= threshold }
  }

  /// Zeroes the masked weights in place; returns how many were pruned.
  @discardableResult
  public static func apply(_ mask: [Bool], to weight: UnsafeMutablePointer<Float>) -> Int {
    var pruned = 0
    for i in mask.indices where mask[i] {
      weight[i] = 0
      pruned += 1
    }
    return pruned
  }
}
