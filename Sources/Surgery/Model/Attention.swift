// Causal grouped-query attention, forward and backward, without keeping any (heads × T × T) tensor:
// forward saves the log-sum-exp of every score row, and backward recomputes the probabilities from
// q, k and lse (as FlashAttention does). Query head h reads key/value head h / (H / KV).
//
// Shapes: q, out (B, T, H, hd); k, v (B, T, KV, hd); lse (B, H, T). Scale 1/sqrt(hd), as HF eager.
// Work is split over (batch, key/value head) with one BLAS thread each, so the heads of one group
// accumulate their dk/dv without races.

import Foundation

public enum Attention {
  /// Scratch floats one worker needs (two T×T score matrices).
  static func scratchPerWorker(T: Int) -> Int { 2 * T * T }

  public static func forward(
    out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
    B: Int, T: Int, H: Int, KV: Int, hd: Int
  ) {
    let group = H / KV
    let scale = 1 / Float(hd).squareRoot()
    parallelOverGroups(B: B, KV: KV, T: T) { b, g, scratch in
      let s = scratch
      for h in (g * group)..<((g + 1) * group) {
        let qh = q + (b * T * H + h) * hd, kg = k + (b * T * KV + g) * hd, vg = v + (b * T * KV + g) * hd
        // S (T, T) = Q_h · K_gᵀ
        Gemm.sgemm(s, qh, kg, m: T, n: T, k: hd, transB: true, lda: H * hd, ldb: KV * hd)
        for i in 0..<T {
          let row = s + i * T
          var m = -Float.infinity
          for j in 0...i { m = max(m, row[j] * scale) }
          var sum: Float = 0
          for j in 0...i {
            let e = expf(row[j] * scale - m)
            row[j] = e
            sum += e
          }
          let inv = 1 / sum
          for j in 0...i { row[j] *= inv }
          for j in (i + 1)..<T { row[j] = 0 }
          lse[(b * H + h) * T + i] = m + logf(sum)
        }
        // O_h (T, hd) = P · V_g
        Gemm.sgemm(out + (b * T * H + h) * hd, s, vg, m: T, n: hd, k: T, ldb: KV * hd, ldc: H * hd)
      }
    }
  }

  /// dq, dk, dv accumulate (+=). dout and out are (B, T, H, hd).
  public static func backward(
    dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
    dout: UnsafePointer<Float>, out: UnsafePointer<Float>, lse: UnsafePointer<Float>,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
    B: Int, T: Int, H: Int, KV: Int, hd: Int
  ) {
    let group = H / KV
    let scale = 1 / Float(hd).squareRoot()
    parallelOverGroups(B: B, KV: KV, T: T) { b, g, scratch in
      let p = scratch, dp = scratch + T * T
      for h in (g * group)..<((g + 1) * group) {
        let rowStride = H * hd
        let qh = q + (b * T * H + h) * hd, kg = k + (b * T * KV + g) * hd, vg = v + (b * T * KV + g) * hd
        let oh = out + (b * T * H + h) * hd, doh = dout + (b * T * H + h) * hd
        // Recompute P from the scores and the saved log-sum-exp.
        Gemm.sgemm(p, qh, kg, m: T, n: T, k: hd, transB: true, lda: rowStride, ldb: KV * hd)
        for i in 0..<T {
          let row = p + i * T
          let l = lse[(b * H + h) * T + i]
          for j in 0...i { row[j] = expf(row[j] * scale - l) }
          for j in (i + 1)..<T { row[j] = 0 }
        }
        // dV_g += Pᵀ · dO_h
        Gemm.sgemm(dv + (b * T * KV + g) * hd, p, doh, m: T, n: hd, k: T, transA: true, beta: 1, ldb: rowStride, ldc: KV * hd)
        // dP = dO_h · V_gᵀ
        Gemm.sgemm(dp, doh, vg, m: T, n: T, k: hd, transB: true, lda: rowStride, ldb: KV * hd)
        // dS = P ⊙ (dP − rowsum(dO ⊙ O)), scaled once here for both dq and dk.
        for i in 0..<T {
          var d: Float = 0
          for c in 0..<hd { d += doh[i * rowStride + c] * oh[i * rowStride + c] }
          let row = dp + i * T, prow = p + i * T
          for j in 0...i { row[j] = prow[j] * (row[j] - d) * scale }
          for j in (i + 1)..<T { row[j] = 0 }
        }
        // dQ_h += dS · K_g ; dK_g += dSᵀ · Q_h
        Gemm.sgemm(dq + (b * T * H + h) * hd, dp, kg, m: T, n: hd, k: T, beta: 1, ldb: KV * hd, ldc: rowStride)
        Gemm.sgemm(dk + (b * T * KV + g) * hd, dp, qh, m: T, n: hd, k: T, transA: true, beta: 1, ldb: rowStride, ldc: KV * hd)
      }
    }
  }

  /// Runs body(b, g, scratch) for every (batch, kv head) on a pool of workers, BLAS single-threaded
  /// meanwhile (one level of parallelism at a time).
  static func parallelOverGroups(
    B: Int, KV: Int, T: Int, _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void
  ) {
    let items = B * KV
    let workers = min(items, ProcessInfo.processInfo.activeProcessorCount)
    let scratchSize = scratchPerWorker(T: T)
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: workers * scratchSize)
    defer { scratch.deallocate() }
    let threads = Gemm.threads
    Gemm.setThreads(1)
    defer { Gemm.setThreads(threads) }
    let shared = SendablePointer(scratch)
    withoutActuallyEscaping(body) { body in
      let task = UncheckedSendable(body)
      DispatchQueue.concurrentPerform(iterations: workers) { w in
        var item = w
        while item < items {
          task.value(item / KV, item % KV, shared.pointer + w * scratchSize)
          item += workers
        }
      }
    }
  }
}

/// A pointer handed to concurrent workers that touch disjoint parts of it.
struct SendablePointer: @unchecked Sendable {
  let pointer: UnsafeMutablePointer<Float>
  init(_ pointer: UnsafeMutablePointer<Float>) { self.pointer = pointer }
}

/// A value (a closure over disjoint work) handed to concurrent workers.
struct UncheckedSendable<T>: @unchecked Sendable {
  let value: T
  init(_ value: T) { self.value = value }
}
