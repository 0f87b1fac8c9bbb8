// SparseGPT (Frantar & Alistarh 2023, IST-DASLab/sparsegpt `fasterprune`; algorithms.md §2): prune a
// linear layer column by column with the optimal-brain-surgeon update, using the upper Cholesky factor U
// of H⁻¹ (H⁻¹ = UᵀU), H = (2/Nseq)·Σ x xᵀ. Blocks of 128 columns: the unstructured mask is chosen once
// per block from W²/diag(U)² with one threshold, N:M masks per group just before the group is processed;
// errors are compensated inside the block and pushed to later columns in one lazy product.

/// H = (2/n)·Σ_batches XᵀX of one linear layer over n sequences. The reference keeps a running mean
/// (H ← H·n/(n+b) + (2/(n+b))·XᵀX, in float32); we sum each batch's float XᵀX in Double and scale once at
/// the end. The sum of float terms in Double is exact unless an entry's batches span ~25 binades, so it
/// does not depend on how the batches were grouped, in one process or over the ranks of an MPI job: the
/// Hessian, and every weight SparseGPT computes from it, are the same bits on 1 or N ranks. (A running
/// mean rounds at every batch; its float conversion then lands on the other side of a tie for many
/// entries, and every weight moves by an ulp.) The batch's XᵀX lives only during `add`: a block's seven
/// accumulators would otherwise hold seven more (columns × columns) buffers between batches.
public final class HessianAccumulator: CalibrationStatistic {
  /// Whether the values are H (scaled), or still the sum.
  private var scaled = false

  public init(columns: Int) { super.init(columns: columns, values: columns * columns, scratch: 0) }

  /// H as a row-major (columns, columns) array.
  public var h: [Double] {
    scale()
    return values
  }

  /// Adds `b` sequences whose tokens are the rows of x (tokens, columns).
  public func add(_ x: UnsafePointer<Float>, tokens: Int, sequences b: Int) {
    let xtx = UnsafeMutablePointer<Float>.allocate(capacity: columns * columns)
    defer { xtx.deallocate() }
    Gemm.sgemm(xtx, x, x, m: columns, n: columns, k: tokens, transA: true)
    let sum = buffer
    for k in 0..<count { sum[k] += Double(xtx[k]) }
    sequences += b
    scaled = false
  }

  /// The sum over the ranks in rank order (to `destination` only, when given), then H = (2/n)·sum.
  override func reduce(on cluster: Cluster, before: Int, total: Int, to destination: Int? = nil) throws(SurgeryError) {
    if cluster.size > 1 {
      try cluster.sum(buffer, count: count, to: destination)
      sequences = total
    }
    scale()
  }

  private func scale() {
    guard !scaled, sequences > 0 else { return }
    let (values, factor) = (buffer, 2 / Double(sequences))
    for k in 0..<count { values[k] *= factor }
    scaled = true
  }
}

public struct SparseGPTResult: Sendable {
  /// Damping fraction actually used (raised ×10 per failed Cholesky).
  public var percdamp: Double
  /// Input columns with no activation, zeroed in W.
  public var deadColumns: Int
  /// Σ (w − q)² / d² / 2 per output row.
  public var rowLoss: [Double]
}

public enum SparseGPT {
  /// Prunes `weight` (rows, cols) in place. Retries with percdamp × 10 (up to `maxPercdamp`) when the
  /// Cholesky factorisation fails.
  public static func prune(
    _ weight: UnsafeMutablePointer<Float>, rows: Int, cols: Int, hessian: [Double], target: SparsityTarget,
    percdamp: Double = 0.01, blockSize: Int = 128, maxPercdamp: Double = 10
  ) throws(SurgeryError) -> SparseGPTResult {
    try hessian.withUnsafeBufferPointer { (h) throws(SurgeryError) in
      try prune(weight, rows: rows, cols: cols, hessian: h, target: target, percdamp: percdamp, blockSize: blockSize, maxPercdamp: maxPercdamp)
    }
  }

  /// The same over H in place (a HessianAccumulator's buffer): H is only read, never copied in Double.
  public static func prune(
    _ weight: UnsafeMutablePointer<Float>, rows: Int, cols: Int, hessian h: UnsafeBufferPointer<Double>, target: SparsityTarget,
    percdamp: Double = 0.01, blockSize: Int = 128, maxPercdamp: Double = 10
  ) throws(SurgeryError) -> SparseGPTResult {
    // A column no calibration input reaches has H_jj = 0: its weights are zeroed and H_jj taken as 1.
    let deadColumns = (0..<cols).map { h[$0 * cols + $0] == 0 }
    var dead = 0
    for j in 0..<cols where deadColumns[j] {
      for r in 0..<rows { weight[r * cols + j] = 0 }
      dead += 1
    }
    var damp = percdamp
    var u: [Float]
    while true {
      if let factor = inverseCholeskyUpper(h, n: cols, percdamp: damp, dead: deadColumns) {
        u = factor
        break
      }
      damp *= 10
      guard damp <= maxPercdamp else { throw .lapack(routine: "spotrf (H not positive definite even with percdamp \(damp / 10))", info: -1) }
    }
    if case .nm(let p) = target, blockSize % p.m != 0 {
      throw .invalidPattern("block size \(blockSize) is not a multiple of M = \(p.m)")
    }
    var loss = [Double](repeating: 0, count: rows)
    var w1 = [Float](repeating: 0, count: rows * blockSize)
    var errors = [Float](repeating: 0, count: rows * blockSize)
    for i1 in stride(from: 0, to: cols, by: blockSize) {
      let i2 = min(i1 + blockSize, cols), count = i2 - i1
      for r in 0..<rows { for c in 0..<count { w1[r * count + c] = weight[r * cols + i1 + c] } }
      var mask = [Bool](repeating: false, count: rows * count)
      if case .unstructured(let ratio) = target {
        var metric = [Float](repeating: 0, count: rows * count)
        for r in 0..<rows {
          for c in 0..<count {
            let d = u[(i1 + c) * cols + i1 + c]
            metric[r * count + c] = w1[r * count + c] * w1[r * count + c] / (d * d)
          }
        }
        mask = metric.withUnsafeBufferPointer { MaskSelection.perTensor($0.baseAddress!, count: rows * count, ratio: ratio) }
      }
      for i in 0..<count {
        let col = i1 + i
        if case .nm(let p) = target, i % p.m == 0 {
          for r in 0..<rows {
            var metric = [Float](repeating: 0, count: p.m)
            for c in 0..<min(p.m, count - i) {
              let d = u[(col + c) * cols + col + c]
              metric[c] = w1[r * count + i + c] * w1[r * count + i + c] / (d * d)
            }
            metric.withUnsafeBufferPointer { m in
              MaskSelection.selectLowest(m.baseAddress!, count: min(p.m, count - i), n: p.n) { mask[r * count + i + $0] = true }
            }
          }
        }
        let d = u[col * cols + col]
        for r in 0..<rows {
          let w = w1[r * count + i]
          let q: Float = mask[r * count + i] ? 0 : w
          loss[r] += Double((w - q) * (w - q)) / Double(d * d) / 2
          let err = (w - q) / d
          // W1[:, i:] -= err ⊗ U[col, col:i2]
          for c in i..<count { w1[r * count + c] -= err * u[col * cols + i1 + c] }
          w1[r * count + i] = q
          errors[r * count + i] = err
        }
      }
      for r in 0..<rows { for c in 0..<count { weight[r * cols + i1 + c] = w1[r * count + c] } }
      // W[:, i2:] -= E1 (rows, count) · U[i1:i2, i2:] (count, cols − i2)
      if i2 < cols {
        let rest = cols - i2
        errors.withUnsafeBufferPointer { e in
          u.withUnsafeBufferPointer { uu in
            Gemm.sgemm(weight + i2, e.baseAddress!, uu.baseAddress! + i1 * cols + i2, m: rows, n: rest, k: count,
              alpha: -1, beta: 1, lda: count, ldb: cols, ldc: cols)
          }
        }
      }
    }
    return SparseGPTResult(percdamp: damp, deadColumns: dead, rowLoss: loss)
  }

  /// U with H⁻¹ = UᵀU after damping H += percdamp·mean(diag H)·I, or nil when H is not positive definite;
  /// the diagonal of `dead` columns is taken as 1 (before the mean).
  static func inverseCholeskyUpper(_ hessian: UnsafeBufferPointer<Double>, n: Int, percdamp: Double, dead: [Bool]) -> [Float]? {
    var h = hessian.map { Float($0) }
    var mean = 0.0
    for j in 0..<n {
      if dead[j] { h[j * n + j] = 1 }
      mean += dead[j] ? 1 : hessian[j * n + j]
    }
    let damp = Float(percdamp * mean / Double(n))
    for j in 0..<n { h[j * n + j] += damp }
    // H = L·Lᵀ, then H⁻¹ from L (lower triangle), mirrored to the upper one.
    guard Linalg.cholesky(&h, n: n, .lower), Linalg.inverseFromCholesky(&h, n: n, .lower) else { return nil }
    for i in 0..<n { for j in (i + 1)..<n { h[i * n + j] = h[j * n + i] } }
    guard Linalg.cholesky(&h, n: n, .upper) else { return nil }
    for i in 0..<n { for j in 0..<i { h[i * n + j] = 0 } }
    return h
  }
}
