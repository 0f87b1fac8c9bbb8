// Row-major single-precision matrix multiply over OpenBLAS, with the naive reference beside it.
// C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C.

import CBLAS

public enum Gemm {
  /// C = alpha·op(A)·op(B) + beta·C, all row-major; `transA`/`transB` select Aᵀ/Bᵀ.
  public static func sgemm(
    _ c: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
    m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false, alpha: Float = 1, beta: Float = 0
  ) {
    let lda = transA ? m : k
    let ldb = transB ? k : n
    cblas_sgemm(
      CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
      blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(n))
  }

  /// The definition, for tests: triple loop accumulating in Double.
  public static func sgemmNaive(
    _ c: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
    m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false, alpha: Float = 1, beta: Float = 0
  ) {
    for i in 0..<m {
      for j in 0..<n {
        var sum = 0.0
        for p in 0..<k {
          let av = transA ? a[p * m + i] : a[i * k + p]
          let bv = transB ? b[j * k + p] : b[p * n + j]
          sum += Double(av) * Double(bv)
        }
        c[i * n + j] = alpha * Float(sum) + (beta == 0 ? 0 : beta * c[i * n + j])
      }
    }
  }

  /// Threads OpenBLAS may use (it reads OPENBLAS_NUM_THREADS at start; this overrides).
  public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }
}
