// Row-major single-precision matrix multiply over OpenBLAS, with the naive reference beside it.
// C (M,N) = alpha · op(A) (M,K) · op(B) (K,N) + beta · C. Leading dimensions default to packed rows and
// may be given for strided views (a head's slice of a (T, H·hd) activation).

import CBLAS

public enum Gemm {
  /// C = alpha·op(A)·op(B) + beta·C, all row-major; `transA`/`transB` select Aᵀ/Bᵀ.
  public static func sgemm(
    _ c: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
    m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false, alpha: Float = 1, beta: Float = 0,
    lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil
  ) {
    guard m > 0, n > 0 else { return }
    BLASThreads.call {
      cblas_sgemm(
        CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
        blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda ?? (transA ? m : k)), b,
        blasint(ldb ?? (transB ? k : n)), beta, c, blasint(ldc ?? n))
    }
  }

  /// y = A·x (rows) or, `transposed`, y = Aᵀ·x (cols), for A (rows × cols) row-major with leading
  /// dimension `lda`. One token's products when decoding: sgemm pays its packing and thread start-up for
  /// a single row, sgemv streams the matrix once (SmolLM2 decoding: 7.4 → 14.4 tokens/s). Only the
  /// decoder calls it: OpenBLAS's sgemv may sum in another order with another thread count, so the
  /// training and pruning paths, which must not depend on it, keep sgemm. y is overwritten.
  public static func sgemv(
    _ y: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, cols: Int,
    transposed: Bool = false, lda: Int? = nil
  ) {
    guard rows > 0, cols > 0 else { return }
    // beta = 0 must not read y (it may hold NaN): clear it and accumulate.
    y.update(repeating: 0, count: transposed ? cols : rows)
    BLASThreads.call {
      cblas_sgemv(
        CblasRowMajor, transposed ? CblasTrans : CblasNoTrans, blasint(rows), blasint(cols), 1, a, blasint(lda ?? cols), x, 1, 1,
        y, 1)
    }
  }

  /// The definition, for tests: triple loop accumulating in Double.
  public static func sgemmNaive(
    _ c: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
    m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false, alpha: Float = 1, beta: Float = 0,
    lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil
  ) {
    let lda = lda ?? (transA ? m : k), ldb = ldb ?? (transB ? k : n), ldc = ldc ?? n
    for i in 0..<m {
      for j in 0..<n {
        var sum = 0.0
        for p in 0..<k {
          let av = transA ? a[p * lda + i] : a[i * lda + p]
          let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
          sum += Double(av) * Double(bv)
        }
        c[i * ldc + j] = alpha * Float(sum) + (beta == 0 ? 0 : beta * c[i * ldc + j])
      }
    }
  }

  /// Threads OpenBLAS may use (it reads OPENBLAS_NUM_THREADS at start; this overrides). See BLASThreads.
  public static func setThreads(_ n: Int) { BLASThreads.set(n) }
  public static var threads: Int { BLASThreads.call { Int(openblas_get_num_threads()) } }
}
