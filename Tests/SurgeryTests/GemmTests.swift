// The BLAS matrix multiply against its naive reference on odd shapes, every transpose combination.

import Testing

@testable import Surgery

@Suite struct GemmTests {
  @Test(arguments: [(1, 1, 1), (1, 7, 13), (1, 300, 5), (3, 5, 7), (17, 9, 33), (64, 3, 5)], [false, true])
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

  /// One row (the matrix-vector path): beta = 0 ignores NaN in C, and strided leading dimensions hold.
  @Test(arguments: [false, true], [false, true])
  func oneRowWithStridesAndNaNOutput(transA: Bool, transB: Bool) {
    let (n, k, pad) = (11, 6, 3)
    let lda = transA ? 1 + pad : k + pad, ldb = (transB ? k : n) + pad
    let a = (0..<(transA ? k * lda : lda)).map { Float($0 % 7) - 3 }
    let b = (0..<((transB ? n : k) * ldb)).map { Float($0 % 5) * 0.25 - 0.5 }
    var fast = [Float](repeating: .nan, count: n)
    var naive = [Float](repeating: 0, count: n)
    Gemm.sgemm(&fast, a, b, m: 1, n: n, k: k, transA: transA, transB: transB, lda: lda, ldb: ldb)
    Gemm.sgemmNaive(&naive, a, b, m: 1, n: n, k: k, transA: transA, transB: transB, lda: lda, ldb: ldb)
    for i in 0..<n { #expect(abs(fast[i] - naive[i]) <= 1e-5 * max(1, abs(naive[i])), "\(i)") }
  }
}
