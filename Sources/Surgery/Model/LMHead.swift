// The language-model head and cross-entropy, computed in chunks of tokens so the (tokens × vocab)
// logits are never held at once. With gradients requested the backward of the head is fused in: each
// chunk's dlogits = (softmax − onehot) / count is turned into dx (and dW for a trained head) before the
// next chunk overwrites the logits.

import Foundation

public struct LMHeadResult {
  /// Mean negative log-likelihood over the counted targets (0 when there are none).
  public var loss: Float
  /// How many targets counted (targets < 0 are ignored).
  public var count: Int
}

public enum LMHead {
  /// x (N, C) final-norm output; weight (V, C). Writes per-token NLL (0 for ignored targets) into
  /// `tokenNLL` (N) when given, accumulates dx (N, C) when given. `logitsOut(n, row)` sees each logit
  /// row (for scoring or decoding) while it exists. `gradientNormalizer` divides dlogits by that many
  /// tokens instead of this batch's count: gradient accumulation over micro-batches then gives the
  /// gradient of the mean over all of them.
  public static func run(
    x: UnsafePointer<Float>, weight: UnsafePointer<Float>, targets: UnsafePointer<Int32>?, N: Int, C: Int, V: Int,
    chunk: Int, scratch: UnsafeMutablePointer<Float>, tokenNLL: UnsafeMutablePointer<Float>?,
    dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>? = nil,
    logitsOut: ((Int, UnsafeBufferPointer<Float>) -> Void)? = nil, gradientNormalizer: Int? = nil
  ) -> LMHeadResult {
    var count = 0
    if let targets { for n in 0..<N where targets[n] >= 0 { count += 1 } }
    let divisor = gradientNormalizer ?? count
    let inverseCount = divisor > 0 ? 1 / Float(divisor) : 0
    var total = 0.0
    var start = 0
    while start < N {
      let rows = min(chunk, N - start)
      let logits = scratch
      // logits (rows, V) = x (rows, C) · Wᵀ
      Gemm.sgemm(logits, x + start * C, weight, m: rows, n: V, k: C, transB: true)
      for r in 0..<rows {
        let n = start + r
        let row = logits + r * V
        logitsOut?(n, UnsafeBufferPointer(start: row, count: V))
        guard let targets, targets[n] >= 0 else {
          tokenNLL?[n] = 0
          if dx != nil { for j in 0..<V { row[j] = 0 } }
          continue
        }
        let target = Int(targets[n])
        let m = VectorMath.max(row, count: V)
        let targetLogit = row[target]
        // The row becomes exp(logit − max); its sum gives log Z.
        let sum = VectorMath.expShiftedSum(row, count: V, shift: m)
        let logZ = m + logf(sum)
        let nll = logZ - targetLogit
        tokenNLL?[n] = nll
        total += Double(nll)
        if dx != nil {
          // dlogits = (softmax − onehot) / count, in place.
          VectorMath.scale(row, count: V, by: inverseCount / sum)
          row[target] -= inverseCount
        }
      }
      if let dx {
        // dx (rows, C) += dlogits (rows, V) · W (V, C)
        Gemm.sgemm(dx + start * C, logits, weight, m: rows, n: C, k: V, beta: 1)
        if let dweight {
          // dW (V, C) += dlogitsᵀ (V, rows) · x (rows, C)
          Gemm.sgemm(dweight, logits, x + start * C, m: V, n: C, k: rows, transA: true, beta: 1)
        }
      }
      start += rows
    }
    return LMHeadResult(loss: count > 0 ? Float(total / Double(count)) : 0, count: count)
  }
}
