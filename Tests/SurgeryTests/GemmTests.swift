// The BLAS matrix multiply against its naive reference on odd shapes, every transpose combination.

import Testing

@testable import Surgery

@Suite struct GemmTests {
  @Test(arguments: [(1, 1, 1), (3, 5, 7), (17, 9, 33), (64, 3, 5)], [false, true])
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
}
