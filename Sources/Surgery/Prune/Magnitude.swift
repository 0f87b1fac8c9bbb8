// Magnitude pruning (Wanda's prune_magnitude baseline): scores are |W|; unstructured uses one threshold
// per tensor, N:M the lowest |W| of each group.

public enum Magnitude {
  /// The mask (true = pruned) of a row-major (rows, cols) weight.
  public static func mask(_ weight: UnsafePointer<Float>, rows: Int, cols: Int, target: SparsityTarget) -> [Bool] {
    let scores = (0..<(rows * cols)).map { abs(weight[$0]) }
    return scores.withUnsafeBufferPointer { s in
      switch target {
      case .unstructured(let ratio): return MaskSelection.perTensor(s.baseAddress!, count: rows * cols, ratio: ratio)
      case .nm(let pattern): return MaskSelection.nm(s.baseAddress!, rows: rows, cols: cols, pattern: pattern)
      }
    }
  }
}
