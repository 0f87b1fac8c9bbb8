// The language-model head and cross-entropy, computed in chunks of tokens so the (tokens × vocab)
// logits are never held at once. With gradients requested the backward of the head is fused in: each
// chunk's dlogits = (softmax − onehot) / count is turned into dx (and dW for a trained head) before the
// next chunk overwrites the logits.

import Foundation
import Formats

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

extension LMHead {
  /// Where the head's weight lives: an f32 matrix in memory, or a stored matrix widened chunk by chunk.
  enum Weight {
    case resident(UnsafePointer<Float>)
    case stored(StoredMatrix)
  }

  /// The head over a weight in its stored dtype: the vocabulary is walked in chunks of `table.chunkRows`
  /// rows (each widened once per pass), logits for all N tokens of a chunk at a time, with an online
  /// log-sum-exp per token (running max and sum). With `dx` a second pass recomputes each chunk's logits
  /// and forms dlogits = (softmax − onehot) / count against the final log Z. `scratch` holds at least
  /// N × min(chunkRows, V) floats. Same results as `run` up to summation order.
  /// Vocabulary rows per chunk of `runStored`: what the stored matrix widens at most, and what the
  /// logits scratch holds for N tokens. The memory plan counts the same rows.
  static func storedChunk(maxRows: Int, N: Int, scratchCount: Int, V: Int) -> Int {
    max(1, min(maxRows, scratchCount / max(1, N), V))
  }

  static func runStored(
    x: UnsafePointer<Float>, table: StoredMatrix, targets: UnsafePointer<Int32>?, N: Int, C: Int, V: Int,
    scratch: UnsafeMutablePointer<Float>, scratchCount: Int, tokenNLL: UnsafeMutablePointer<Float>?,
    dx: UnsafeMutablePointer<Float>?, gradientNormalizer: Int? = nil
  ) throws(FormatError) -> LMHeadResult {
    var count = 0
    if let targets { for n in 0..<N where targets[n] >= 0 { count += 1 } }
    let divisor = gradientNormalizer ?? count
    let inverseCount = divisor > 0 ? 1 / Float(divisor) : 0
    let chunk = storedChunk(maxRows: table.chunkRows, N: N, scratchCount: scratchCount, V: V)
    var runningMax = [Float](repeating: -.infinity, count: N)
    var runningSum = [Float](repeating: 0, count: N)
    var targetLogit = [Float](repeating: 0, count: N)
    let logits = scratch
    /// For every vocabulary chunk: logits (N, rows) = x (N, C) · W_chunkᵀ, then `body(start, rows, W_chunk)`.
    func forEachChunk(_ body: (Int, Int, UnsafePointer<Float>) -> Void) throws(FormatError) {
      for start in stride(from: 0, to: V, by: chunk) {
        let rows = min(chunk, V - start)
        try table.withRows(start..<(start + rows)) { w in
          Gemm.sgemm(logits, x, w, m: N, n: rows, k: C, transB: true)
          body(start, rows, w)
        }
      }
    }
    // Pass 1: log Z and the target logit of every token.
    try forEachChunk { start, rows, _ in
      for n in 0..<N {
        let row = logits + n * rows
        if let targets, targets[n] >= Int32(start), targets[n] < Int32(start + rows) { targetLogit[n] = row[Int(targets[n]) - start] }
        let m = max(runningMax[n], VectorMath.max(row, count: rows))
        // Rescale the running sum to the new max, then add this chunk's exp(logit − max).
        let rescaled = runningMax[n] == -.infinity ? 0 : runningSum[n] * expf(runningMax[n] - m)
        runningSum[n] = rescaled + VectorMath.expShiftedSum(row, count: rows, shift: m)
        runningMax[n] = m
      }
    }
    var total = 0.0
    var logZ = [Float](repeating: 0, count: N)
    for n in 0..<N {
      logZ[n] = runningMax[n] + logf(runningSum[n])
      guard let targets, targets[n] >= 0 else {
        tokenNLL?[n] = 0
        continue
      }
      let nll = logZ[n] - targetLogit[n]
      tokenNLL?[n] = nll
      total += Double(nll)
    }
    if let dx, count > 0 || gradientNormalizer != nil {
      // Pass 2: dx (N, C) += dlogits (N, rows) · W_chunk (rows, C), chunk by chunk.
      try forEachChunk { start, rows, w in
        for n in 0..<N {
          let row = logits + n * rows
          guard let targets, targets[n] >= 0 else {
            row.update(repeating: 0, count: rows)
            continue
          }
          for j in 0..<rows { row[j] = expf(row[j] - logZ[n]) * inverseCount }
          let t = Int(targets[n]) - start
          if t >= 0 && t < rows { row[t] -= inverseCount }
        }
        Gemm.sgemm(dx, logits, w, m: N, n: C, k: rows, beta: 1)
      }
    }
    return LMHeadResult(loss: count > 0 ? Float(total / Double(count)) : 0, count: count)
  }
}

extension LMHead {
  /// The logits of one token: out (V) = W (V, C) · x (C), over a resident weight or a stored one widened
  /// a chunk of vocabulary rows at a time (decoding).
  static func logits(x: UnsafePointer<Float>, weight: Weight, C: Int, V: Int, into out: UnsafeMutablePointer<Float>) throws(FormatError) {
    switch weight {
    case .resident(let w):
      Gemm.sgemv(out, w, x, rows: V, cols: C)
    case .stored(let table):
      for start in stride(from: 0, to: V, by: table.chunkRows) {
        let rows = min(table.chunkRows, V - start)
        try table.withRows(start..<(start + rows)) { w in
          Gemm.sgemv(out + start, w, x, rows: rows, cols: C)
        }
      }
    }
  }
}
