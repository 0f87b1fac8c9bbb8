// Causal grouped-query attention, forward and backward, without keeping any (heads × T × T) tensor:
// forward saves the log-sum-exp of every score row, and backward recomputes the probabilities from
// q, k and lse (as FlashAttention does). Query head h reads key/value head h / (H / KV).
//
// Shapes: q, out (B, T, H, hd); k, v (B, T, KV, hd); lse (B, H, T). Scale 1/sqrt(hd), as HF eager, unless
// given (Gemma 3: query_pre_attn_scalar^-½). With a `window` W (Gemma 3's sliding layers) row i sees keys
// i−W+1 ... i only, and each block of rows multiplies only the keys some row of it sees.
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
    B: Int, T: Int, H: Int, KV: Int, hd: Int, window: Int? = nil, scale: Float? = nil
  ) {
    let heads = Heads(T: T, H: H, KV: KV, hd: hd, window: window, scaleOverride: scale)
    let (scale, rowStride, kvStride) = (heads.scale, heads.rowStride, heads.kvStride)
    parallelOverGroups(B: B, KV: KV, T: T) { b, g, scratch in
      let s = scratch
      for h in heads.queryHeads(of: g) {
        let qh = q + heads.query(b, h), kg = k + heads.keyValue(b, g), vg = v + heads.keyValue(b, g)
        for i0 in stride(from: 0, to: T, by: rowBlock) {
          let rows = min(rowBlock, T - i0)
          let (lo, keys) = heads.keyRange(rows: i0, count: rows)
          // S (rows, keys) = Q_h[i0..<i0+rows] · K_g[lo..<lo+keys]ᵀ
          Gemm.sgemm(s, qh + i0 * rowStride, kg + lo * kvStride, m: rows, n: keys, k: hd, transB: true, lda: rowStride, ldb: kvStride)
          for r in 0..<rows {
            let i = i0 + r, row = s + r * keys
            let (first, n) = heads.visible(row: i, from: lo)
            let seen = row + first
            VectorMath.scale(seen, count: n, by: scale)
            let m = VectorMath.max(seen, count: n)
            let sum = VectorMath.expShiftedSum(seen, count: n, shift: m)
            VectorMath.scale(seen, count: n, by: 1 / sum)
            for j in 0..<first { row[j] = 0 }
            for j in (first + n)..<keys { row[j] = 0 }
            lse[(b * H + h) * T + i] = m + logf(sum)
          }
          // O_h[i0..<i0+rows] = P · V_g[lo..<lo+keys]
          Gemm.sgemm(out + heads.query(b, h) + i0 * rowStride, s, vg + lo * kvStride, m: rows, n: hd, k: keys, ldb: kvStride, ldc: rowStride)
        }
      }
    }
  }

  /// dq, dk, dv accumulate (+=). dout and out are (B, T, H, hd).
  public static func backward(
    dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
    dout: UnsafePointer<Float>, out: UnsafePointer<Float>, lse: UnsafePointer<Float>,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
    B: Int, T: Int, H: Int, KV: Int, hd: Int, window: Int? = nil, scale: Float? = nil
  ) {
    let heads = Heads(T: T, H: H, KV: KV, hd: hd, window: window, scaleOverride: scale)
    let (scale, rowStride, kvStride) = (heads.scale, heads.rowStride, heads.kvStride)
    parallelOverGroups(B: B, KV: KV, T: T) { b, g, scratch in
      let p = scratch, dp = scratch + T * T
      for h in heads.queryHeads(of: g) {
        let (qo, kvo) = (heads.query(b, h), heads.keyValue(b, g))
        let (qh, oh, doh) = (q + qo, out + qo, dout + qo)
        let dqh = dq + qo
        for i0 in stride(from: 0, to: T, by: rowBlock) {
          let rows = min(rowBlock, T - i0)
          let (lo, keys) = heads.keyRange(rows: i0, count: rows)
          let (kg, vg, dkg, dvg) = (k + kvo + lo * kvStride, v + kvo + lo * kvStride, dk + kvo + lo * kvStride, dv + kvo + lo * kvStride)
          let qb = qh + i0 * rowStride, dob = doh + i0 * rowStride
          // Recompute P from the scores and the saved log-sum-exp.
          Gemm.sgemm(p, qb, kg, m: rows, n: keys, k: hd, transB: true, lda: rowStride, ldb: kvStride)
          for r in 0..<rows {
            let i = i0 + r, row = p + r * keys
            let (first, n) = heads.visible(row: i, from: lo)
            VectorMath.scale(row + first, count: n, by: scale)
            _ = VectorMath.expShiftedSum(row + first, count: n, shift: lse[(b * H + h) * T + i])
            for j in 0..<first { row[j] = 0 }
            for j in (first + n)..<keys { row[j] = 0 }
          }
          // dV_g[lo..<lo+keys] += Pᵀ · dO_h[block]
          Gemm.sgemm(dvg, p, dob, m: keys, n: hd, k: rows, transA: true, beta: 1, ldb: rowStride, ldc: kvStride)
          // dP = dO_h[block] · V_g[lo..<lo+keys]ᵀ
          Gemm.sgemm(dp, dob, vg, m: rows, n: keys, k: hd, transB: true, lda: rowStride, ldb: kvStride)
          // dS = P ⊙ (dP − rowsum(dO ⊙ O)), scaled once here for both dq and dk.
          for r in 0..<rows {
            let i = i0 + r
            var d: Float = 0
            for c in 0..<hd { d += doh[i * rowStride + c] * oh[i * rowStride + c] }
            let row = dp + r * keys, prow = p + r * keys
            let (first, n) = heads.visible(row: i, from: lo)
            for j in 0..<first { row[j] = 0 }
            for j in first..<(first + n) { row[j] = prow[j] * (row[j] - d) * scale }
            for j in (first + n)..<keys { row[j] = 0 }
          }
          // dQ_h[block] += dS · K_g[lo..<lo+keys] ; dK_g[lo..<lo+keys] += dSᵀ · Q_h[block]
          Gemm.sgemm(dqh + i0 * rowStride, dp, kg, m: rows, n: hd, k: keys, beta: 1, ldb: kvStride, ldc: rowStride)
          Gemm.sgemm(dkg, dp, qb, m: keys, n: hd, k: rows, transA: true, beta: 1, ldb: rowStride, ldc: kvStride)
        }
      }
    }
  }

  /// The definition, for tests: softmax(q·kᵀ·scale + mask)·v per (batch, head) in Double, with the whole
  /// score row materialised (causal, and with a window W only keys i−W+1 ... i); query head h reads kv
  /// head h/(H/KV); scale 1/√hd unless given.
  public static func forwardNaive(
    q: [Float], k: [Float], v: [Float], B: Int, T: Int, H: Int, KV: Int, hd: Int, window: Int? = nil, scale: Double? = nil
  ) -> [Float] {
    var out = [Float](repeating: 0, count: B * T * H * hd)
    let scale = scale ?? 1 / Double(hd).squareRoot()
    for b in 0..<B {
      for h in 0..<H {
        let g = h / (H / KV)
        for i in 0..<T {
          let first = window.map { max(0, i - $0 + 1) } ?? 0
          var scores = [Double](repeating: 0, count: i + 1 - first)
          for j in first...i {
            var s = 0.0
            for c in 0..<hd { s += Double(q[((b * T + i) * H + h) * hd + c]) * Double(k[((b * T + j) * KV + g) * hd + c]) }
            scores[j - first] = s * scale
          }
          let m = scores.max()!
          let e = scores.map { Foundation.exp($0 - m) }
          let z = e.reduce(0, +)
          for c in 0..<hd {
            var o = 0.0
            for j in first...i { o += e[j - first] / z * Double(v[((b * T + j) * KV + g) * hd + c]) }
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
    let workers = min(items, BLASThreads.poolSize)
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
/// kvStride apart. Scores are scaled by 1/√hd unless another scale is given; with a window W, row i sees
/// keys i−W+1 ... i.
struct Heads {
  let T: Int, H: Int, KV: Int, hd: Int
  var window: Int? = nil
  var scaleOverride: Float? = nil
  var rowStride: Int { H * hd }
  var kvStride: Int { KV * hd }
  var scale: Float { scaleOverride ?? 1 / Float(hd).squareRoot() }
  func queryHeads(of g: Int) -> Range<Int> { (g * (H / KV))..<((g + 1) * (H / KV)) }
  func query(_ b: Int, _ h: Int) -> Int { (b * T * H + h) * hd }
  func keyValue(_ b: Int, _ g: Int) -> Int { (b * T * KV + g) * hd }
  /// The keys rows i0 ..< i0+count see between them: from lo, `keys` of them.
  func keyRange(rows i0: Int, count: Int) -> (lo: Int, keys: Int) {
    let lo = window.map { max(0, i0 - $0 + 1) } ?? 0
    return (lo, i0 + count - lo)
  }
  /// Row i's visible keys as columns of a score block whose first key is `lo`: from `first`, n of them.
  func visible(row i: Int, from lo: Int) -> (first: Int, n: Int) {
    let start = window.map { max(lo, i - $0 + 1) } ?? lo
    return (start - lo, i - start + 1)
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
