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

  /// Query rows are processed in blocks that only look at the keys they can see: block [i0, i1) needs
  /// keys [0, i1), which skips about 3/8 of the score products at T = 256 with 64-row blocks.
  static let rowBlock = 64

  public static func forward(
    out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
    B: Int, T: Int, H: Int, KV: Int, hd: Int
  ) {
    let heads = Heads(T: T, H: H, KV: KV, hd: hd)
    let (scale, rowStride, kvStride) = (heads.scale, heads.rowStride, heads.kvStride)
    parallelOverGroups(B: B, KV: KV, T: T) { b, g, scratch in
      let s = scratch
      for h in heads.queryHeads(of: g) {
        let qh = q + heads.query(b, h), kg = k + heads.keyValue(b, g), vg = v + heads.keyValue(b, g)
        for i0 in stride(from: 0, to: T, by: rowBlock) {
          let rows = min(rowBlock, T - i0), keys = i0 + rows
          // S (rows, keys) = Q_h[i0..<i0+rows] · K_g[0..<keys]ᵀ
          Gemm.sgemm(s, qh + i0 * rowStride, kg, m: rows, n: keys, k: hd, transB: true, lda: rowStride, ldb: kvStride)
          for r in 0..<rows {
            let i = i0 + r, row = s + r * keys
            VectorMath.scale(row, count: i + 1, by: scale)
            let m = VectorMath.max(row, count: i + 1)
            let sum = VectorMath.expShiftedSum(row, count: i + 1, shift: m)
            VectorMath.scale(row, count: i + 1, by: 1 / sum)
            for j in (i + 1)..<keys { row[j] = 0 }
            lse[(b * H + h) * T + i] = m + logf(sum)
          }
          // O_h[i0..<i0+rows] = P · V_g[0..<keys]
          Gemm.sgemm(out + heads.query(b, h) + i0 * rowStride, s, vg, m: rows, n: hd, k: keys, ldb: kvStride, ldc: rowStride)
        }
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
    let heads = Heads(T: T, H: H, KV: KV, hd: hd)
    let (scale, rowStride, kvStride) = (heads.scale, heads.rowStride, heads.kvStride)
    parallelOverGroups(B: B, KV: KV, T: T) { b, g, scratch in
      let p = scratch, dp = scratch + T * T
      for h in heads.queryHeads(of: g) {
        let (qo, kvo) = (heads.query(b, h), heads.keyValue(b, g))
        let (qh, kg, vg, oh, doh) = (q + qo, k + kvo, v + kvo, out + qo, dout + qo)
        let (dqh, dkg, dvg) = (dq + qo, dk + kvo, dv + kvo)
        for i0 in stride(from: 0, to: T, by: rowBlock) {
          let rows = min(rowBlock, T - i0), keys = i0 + rows
          let qb = qh + i0 * rowStride, dob = doh + i0 * rowStride
          // Recompute P from the scores and the saved log-sum-exp.
          Gemm.sgemm(p, qb, kg, m: rows, n: keys, k: hd, transB: true, lda: rowStride, ldb: kvStride)
          for r in 0..<rows {
            let i = i0 + r, row = p + r * keys
            VectorMath.scale(row, count: i + 1, by: scale)
            _ = VectorMath.expShiftedSum(row, count: i + 1, shift: lse[(b * H + h) * T + i])
            for j in (i + 1)..<keys { row[j] = 0 }
          }
          // dV_g[0..<keys] += Pᵀ · dO_h[block]
          Gemm.sgemm(dvg, p, dob, m: keys, n: hd, k: rows, transA: true, beta: 1, ldb: rowStride, ldc: kvStride)
          // dP = dO_h[block] · V_g[0..<keys]ᵀ
          Gemm.sgemm(dp, dob, vg, m: rows, n: keys, k: hd, transB: true, lda: rowStride, ldb: kvStride)
          // dS = P ⊙ (dP − rowsum(dO ⊙ O)), scaled once here for both dq and dk.
          for r in 0..<rows {
            let i = i0 + r
            var d: Float = 0
            for c in 0..<hd { d += doh[i * rowStride + c] * oh[i * rowStride + c] }
            let row = dp + r * keys, prow = p + r * keys
            for j in 0...i { row[j] = prow[j] * (row[j] - d) * scale }
            for j in (i + 1)..<keys { row[j] = 0 }
          }
          // dQ_h[block] += dS · K_g[0..<keys] ; dK_g[0..<keys] += dSᵀ · Q_h[block]
          Gemm.sgemm(dqh + i0 * rowStride, dp, kg, m: rows, n: hd, k: keys, beta: 1, ldb: kvStride, ldc: rowStride)
          Gemm.sgemm(dkg, dp, qb, m: keys, n: hd, k: rows, transA: true, beta: 1, ldb: rowStride, ldc: kvStride)
        }
      }
    }
  }

  /// The definition, for tests: softmax(q·kᵀ/√hd + causal mask)·v per (batch, head) in Double, with the
  /// whole score row materialised; query head h reads kv head h/(H/KV).
  public static func forwardNaive(q: [Float], k: [Float], v: [Float], B: Int, T: Int, H: Int, KV: Int, hd: Int) -> [Float] {
    var out = [Float](repeating: 0, count: B * T * H * hd)
    for b in 0..<B {
      for h in 0..<H {
        let g = h / (H / KV)
        for i in 0..<T {
          var scores = [Double](repeating: 0, count: i + 1)
          for j in 0...i {
            var s = 0.0
            for c in 0..<hd { s += Double(q[((b * T + i) * H + h) * hd + c]) * Double(k[((b * T + j) * KV + g) * hd + c]) }
            scores[j] = s / Double(hd).squareRoot()
          }
          let m = scores.max()!
          let e = scores.map { Foundation.exp($0 - m) }
          let z = e.reduce(0, +)
          for c in 0..<hd {
            var o = 0.0
            for j in 0...i { o += e[j] / z * Double(v[((b * T + j) * KV + g) * hd + c]) }
            out[((b * T + i) * H + h) * hd + c] = Float(o)
          }
        }
      }
    }
    return out
  }

  /// Runs body(b, g, scratch) for every (batch, kv head) on a pool of workers, BLAS single-threaded
  /// meanwhile (one level of parallelism at a time; BLASThreads keeps other threads' products out).
  static func parallelOverGroups(
    B: Int, KV: Int, T: Int, _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void
  ) {
    let items = B * KV
    let workers = min(items, ProcessInfo.processInfo.activeProcessorCount)
    let scratchSize = scratchPerWorker(T: T)
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: workers * scratchSize)
    defer { scratch.deallocate() }
    let shared = SendablePointer(scratch)
    BLASThreads.singleThreaded {
      withoutActuallyEscaping(body) { body in
        let task = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
          BLASThreads.worker {
            Denormals.flushed {
              var item = w
              while item < items {
                task.value(item / KV, item % KV, shared.pointer + w * scratchSize)
                item += workers
              }
            }
          }
        }
      }
    }
  }
}

/// Where each head lives in the (B, T, heads, hd) activations: query head h of batch b starts at
/// query(b, h) with rows rowStride apart; its key/value head g = h / (H / KV) at keyValue(b, g), rows
/// kvStride apart. Scores are scaled by 1/√hd.
struct Heads {
  let T: Int, H: Int, KV: Int, hd: Int
  var rowStride: Int { H * hd }
  var kvStride: Int { KV * hd }
  var scale: Float { 1 / Float(hd).squareRoot() }
  func queryHeads(of g: Int) -> Range<Int> { (g * (H / KV))..<((g + 1) * (H / KV)) }
  func query(_ b: Int, _ h: Int) -> Int { (b * T * H + h) * hd }
  func keyValue(_ b: Int, _ g: Int) -> Int { (b * T * KV + g) * hd }
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
