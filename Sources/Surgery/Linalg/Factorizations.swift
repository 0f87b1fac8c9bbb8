// The LAPACK factorisations the methods use, row-major and in f32, behind one small interface, with a
// naive reference beside each for the tests: Cholesky (SparseGPT's H⁻¹ factor) and the thin SVD
// (LoRS' gradient initialisation).

import CLAPACKE

public enum Linalg {
  public enum Triangle { case lower, upper }

  static func uplo(_ t: Triangle) -> Int8 { Int8(UInt8(ascii: t == .lower ? "L" : "U")) }

  /// A = L·Lᵀ (lower) or Uᵀ·U (upper) in place for a symmetric positive-definite (n, n) matrix; only the
  /// chosen triangle is written, the other keeps its input. False when A is not positive definite.
  public static func cholesky(_ a: inout [Float], n: Int, _ triangle: Triangle) -> Bool {
    BLASThreads.call { LAPACKE_spotrf(LAPACK_ROW_MAJOR, uplo(triangle), Int32(n), &a, Int32(n)) } == 0
  }

  /// A⁻¹ from its Cholesky factor (in `triangle` of `a`), written to that triangle. False on a singular factor.
  public static func inverseFromCholesky(_ a: inout [Float], n: Int, _ triangle: Triangle) -> Bool {
    BLASThreads.call { LAPACKE_spotri(LAPACK_ROW_MAJOR, uplo(triangle), Int32(n), &a, Int32(n)) } == 0
  }

  /// Thin SVD of a (rows, cols) matrix: A = U·diag(s)·Vᵀ with U (rows, k), s descending (k), Vᵀ (k, cols),
  /// k = min(rows, cols). LAPACK's divide-and-conquer sgesdd.
  public static func svd(_ a: [Float], rows: Int, cols: Int) throws(SurgeryError) -> (u: [Float], s: [Float], vt: [Float]) {
    var work = a
    let k = min(rows, cols)
    var s = [Float](repeating: 0, count: k)
    var u = [Float](repeating: 0, count: rows * k)
    var vt = [Float](repeating: 0, count: k * cols)
    let info = BLASThreads.call {
      LAPACKE_sgesdd(
        LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "S")), Int32(rows), Int32(cols), &work, Int32(cols), &s, &u, Int32(k), &vt, Int32(cols))
    }
    guard info == 0 else { throw .lapack(routine: "sgesdd", info: Int(info)) }
    return (u, s, vt)
  }

  // MARK: - Naive references (tests only)

  /// The lower Cholesky factor by the textbook column recurrence in Double; nil when not positive definite.
  public static func choleskyLowerNaive(_ a: [Float], n: Int) -> [Float]? {
    var l = [Double](repeating: 0, count: n * n)
    for j in 0..<n {
      var d = Double(a[j * n + j])
      for k in 0..<j { d -= l[j * n + k] * l[j * n + k] }
      guard d > 0 else { return nil }
      l[j * n + j] = d.squareRoot()
      for i in (j + 1)..<max(j + 1, n) {
        var v = Double(a[i * n + j])
        for k in 0..<j { v -= l[i * n + k] * l[j * n + k] }
        l[i * n + j] = v / l[j * n + j]
      }
    }
    return l.map { Float($0) }
  }

  /// Singular values and right singular vectors by one-sided Jacobi rotations on the columns of A, in
  /// Double: columns are rotated pairwise until orthogonal; their norms are the singular values and the
  /// accumulated rotations V. Returns s descending (k) and Vᵀ (k, cols), k = min(rows, cols).
  public static func svdNaive(_ a: [Float], rows: Int, cols: Int, sweeps: Int = 60) -> (s: [Float], vt: [Float]) {
    var w = a.map(Double.init)  // (rows, cols), columns rotated in place
    var v = [Double](repeating: 0, count: cols * cols)
    for i in 0..<cols { v[i * cols + i] = 1 }
    for _ in 0..<sweeps {
      var rotated = false
      for p in 0..<cols {
        for q in (p + 1)..<max(p + 1, cols) {
          var (alpha, beta, gamma) = (0.0, 0.0, 0.0)
          for r in 0..<rows {
            alpha += w[r * cols + p] * w[r * cols + p]
            beta += w[r * cols + q] * w[r * cols + q]
            gamma += w[r * cols + p] * w[r * cols + q]
          }
          guard abs(gamma) > 1e-15 * (alpha * beta).squareRoot(), gamma != 0 else { continue }
          rotated = true
          let zeta = (beta - alpha) / (2 * gamma)
          let t = (zeta >= 0 ? 1.0 : -1.0) / (abs(zeta) + (1 + zeta * zeta).squareRoot())
          let c = 1 / (1 + t * t).squareRoot(), s = c * t
          for r in 0..<rows {
            let (x, y) = (w[r * cols + p], w[r * cols + q])
            (w[r * cols + p], w[r * cols + q]) = (c * x - s * y, s * x + c * y)
          }
          for r in 0..<cols {
            let (x, y) = (v[r * cols + p], v[r * cols + q])
            (v[r * cols + p], v[r * cols + q]) = (c * x - s * y, s * x + c * y)
          }
        }
      }
      if !rotated { break }
    }
    let norms = (0..<cols).map { j in (0..<rows).reduce(0.0) { $0 + w[$1 * cols + j] * w[$1 * cols + j] }.squareRoot() }
    let order = (0..<cols).sorted { norms[$0] > norms[$1] }.prefix(min(rows, cols))
    let s = order.map { Float(norms[$0]) }
    let vt = order.flatMap { j in (0..<cols).map { Float(v[$0 * cols + j]) } }
    return (s, vt)
  }
}
