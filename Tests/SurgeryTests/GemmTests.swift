// The BLAS matrix multiply against its naive reference on odd shapes, every transpose combination.

import Testing

@testable import Surgery

@Suite struct GemmTests {
  @Test(arguments: [(1, 1, 1), (1, 7, 13), (3, 5, 7), (17, 9, 33), (64, 3, 5)], [false, true])
  func blasMatchesNaive(shape: (Int, Int, Int), transpose: Bool) {
    let (m, n, k) = shape
    var state: UInt32 = 12345
    func random() -> Float {
      state = state &* 1_664_525 &+ 1_013_904_223
      return Float(Int32(bitPattern: state >> 8) - (1 << 23)) / Float(1 << 23)
    }
    let a = (0..<(m * k)).map { _ in random() }
    let b = (0..<(k * n)).map { _ in random() }
    for transB in [false, true] {
      var fast = (0..<(m * n)).map { _ in random() }
      var naive = fast
      Gemm.sgemm(&fast, a, b, m: m, n: n, k: k, transA: transpose, transB: transB, alpha: 0.5, beta: 2)
      Gemm.sgemmNaive(&naive, a, b, m: m, n: n, k: k, transA: transpose, transB: transB, alpha: 0.5, beta: 2)
      for i in 0..<(m * n) { #expect(abs(fast[i] - naive[i]) <= 1e-4 * max(1, abs(naive[i]))) }
    }
  }

  /// The matrix-vector product against the naive sgemm, both ways, with a padded leading dimension; y's
  /// NaN content is ignored.
  @Test(arguments: [false, true])
  func matrixVectorMatchesNaive(transposed: Bool) {
    let (rows, cols, lda) = (11, 6, 9)
    let a = (0..<(rows * lda)).map { Float($0 % 7) - 3 }
    let x = (0..<(transposed ? rows : cols)).map { Float($0 % 5) * 0.25 - 0.5 }
    let n = transposed ? cols : rows
    var fast = [Float](repeating: .nan, count: n)
    var naive = [Float](repeating: 0, count: n)
    Gemm.sgemv(&fast, a, x, rows: rows, cols: cols, transposed: transposed, lda: lda)
    // y (1 × n) = xᵀ · Aᵀ, or xᵀ · A.
    Gemm.sgemmNaive(&naive, x, a, m: 1, n: n, k: transposed ? rows : cols, transB: !transposed, ldb: lda)
    for i in 0..<n { #expect(abs(fast[i] - naive[i]) <= 1e-5 * max(1, abs(naive[i])), "\(i)") }
  }
}
