// The key/value cache of autoregressive decoding, and attention of new query rows over it.
//
// Per layer the cache holds the rotated keys and the values of every position fed so far:
// keys, values (layers, capacity, KV, hd). A step feeds T new tokens at positions start..<start+T: their
// k and v are written at those rows, and their queries attend to rows 0...start+t (causal), which is
// what full-sequence attention computes for those rows (tested against Attention.forwardNaive).

public final class KVCache {
  public let layers: Int
  /// Positions the cache holds at most.
  public let capacity: Int
  /// Floats per position of one layer: KV heads × head dim.
  public let kvDim: Int
  /// Positions fed so far.
  public private(set) var length = 0
  let keys: UnsafeMutablePointer<Float>
  let values: UnsafeMutablePointer<Float>

  public init(layers: Int, capacity: Int, kvDim: Int) {
    self.layers = layers
    self.capacity = capacity
    self.kvDim = kvDim
    keys = .allocate(capacity: layers * capacity * kvDim)
    values = .allocate(capacity: layers * capacity * kvDim)
  }

  deinit {
    keys.deallocate()
    values.deallocate()
  }

  /// Bytes a cache of these dimensions holds (the memory plan counts the same).
  public static func bytes(layers: Int, capacity: Int, kvDim: Int) -> Int { 2 * layers * capacity * kvDim * 4 }

  /// Layer l's keys and values, row p at offset p × kvDim.
  func keys(layer l: Int) -> UnsafeMutablePointer<Float> { keys + l * capacity * kvDim }
  func values(layer l: Int) -> UnsafeMutablePointer<Float> { values + l * capacity * kvDim }

  /// Marks `count` more positions as fed (after every layer has written them).
  func advance(by count: Int) {
    precondition(length + count <= capacity)
    length += count
  }

  /// Forgets every position (a new sequence).
  public func reset() { length = 0 }
}

public enum CachedAttention {
  /// out (T, H, hd) = softmax(q kᵀ/√hd + causal mask) v for T query rows at positions start..<start+T,
  /// over keys/values (start+T, KV, hd) already holding those rows. Query head h reads key/value head
  /// h / (H / KV). `scores` holds T × (start+T) floats. With a `window` W, position p sees p−W+1 ... p;
  /// the scale is 1/√hd unless given.
  public static func forward(
    out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
    start: Int, T: Int, H: Int, KV: Int, hd: Int, scores: UnsafeMutablePointer<Float>, window: Int? = nil, scale: Float? = nil
  ) {
    let L = start + T
    let (rowStride, kvStride) = (H * hd, KV * hd)
    let scale = scale ?? 1 / Float(hd).squareRoot()
    for h in 0..<H {
      let g = h / (H / KV)
      // S (T, L) = Q_h (T, hd) · K_g (L, hd)ᵀ; one query row: s (L) = K_g · q.
      if T == 1 {
        Gemm.sgemv(scores, keys + g * hd, q + h * hd, rows: L, cols: hd, lda: kvStride)
      } else {
        Gemm.sgemm(scores, q + h * hd, keys + g * hd, m: T, n: L, k: hd, transB: true, lda: rowStride, ldb: kvStride)
      }
      for t in 0..<T {
        let row = scores + t * L, visible = start + t + 1
        let first = window.map { max(0, visible - $0) } ?? 0
        let (seen, n) = (row + first, visible - first)
        VectorMath.scale(seen, count: n, by: scale)
        let m = VectorMath.max(seen, count: n)
        let sum = VectorMath.expShiftedSum(seen, count: n, shift: m)
        VectorMath.scale(seen, count: n, by: 1 / sum)
        for j in 0..<first { row[j] = 0 }
        for j in visible..<L { row[j] = 0 }
      }
      // O_h (T, hd) = P (T, L) · V_g (L, hd); one row: o (hd) = V_gᵀ · p.
      if T == 1 {
        Gemm.sgemv(out + h * hd, values + g * hd, scores, rows: L, cols: hd, transposed: true, lda: kvStride)
      } else {
        Gemm.sgemm(out + h * hd, scores, values + g * hd, m: T, n: hd, k: L, ldb: kvStride, ldc: rowStride)
      }
    }
  }
}
