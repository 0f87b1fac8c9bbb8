// The BLAS matrix multiply against its naive reference on odd shapes, every transpose combination.

import Foundation
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

  /// OpenBLAS's products depend on its thread count, a process-wide setting that attention switches to
  /// one thread for its workers. A product on another thread must keep its bits while attention runs
  /// beside it (BLASThreads); before that lock, a resumed fine-tune differed from an uninterrupted one
  /// when other test suites ran at the same time.
  @Test func productsKeepTheirBitsWhileAttentionRunsOnAnotherThread() {
    guard ProcessInfo.processInfo.activeProcessorCount > 1 else { return }
    // The tiny model's LM head product, large enough for OpenBLAS to use its threads.
    let (m, n, k) = (32, 448, 64)
    let a = (0..<(m * k)).map { Float(sin(Double($0) * 0.37)) }
    let b = (0..<(k * n)).map { Float(cos(Double($0) * 0.11)) * ($0 % 7 == 0 ? 1e-3 : 1) }
    func product() -> [Float] {
      var c = [Float](repeating: 0, count: m * n)
      Gemm.sgemm(&c, a, b, m: m, n: n, k: k)
      return c
    }
    let threads = Gemm.threads
    // The same product at one thread differs from the default (else this test would show nothing).
    let reference = product()
    var single = [Float](repeating: 0, count: m * n)
    BLASThreads.singleThreaded { Gemm.sgemm(&single, a, b, m: m, n: n, k: k) }
    guard single != reference else { return }

    let (B, T, H, KV, hd) = (2, 64, 4, 2, 16)
    let q = (0..<(B * T * H * hd)).map { Float(sin(Double($0))) }
    let kv = (0..<(B * T * KV * hd)).map { Float(cos(Double($0))) }
    let stop = Stop()
    let attention = Thread {
      var out = [Float](repeating: 0, count: B * T * H * hd), lse = [Float](repeating: 0, count: B * H * T)
      while !stop.value { Attention.forward(out: &out, lse: &lse, q: q, k: kv, v: kv, B: B, T: T, H: H, KV: KV, hd: hd) }
      stop.finished()
    }
    attention.start()
    var differing = 0
    for _ in 0..<400 where product() != reference { differing += 1 }
    stop.stopAndWait()
    #expect(differing == 0)
    #expect(Gemm.threads == threads)
  }
}

/// A flag for the attention thread, and a wait for it to finish.
private final class Stop: @unchecked Sendable {
  private let condition = NSCondition()
  private var stopped = false, done = false
  var value: Bool { condition.lock(); defer { condition.unlock() }; return stopped }
  func finished() { condition.lock(); done = true; condition.signal(); condition.unlock() }
  func stopAndWait() {
    condition.lock()
    stopped = true
    while !done { condition.wait() }
    condition.unlock()
  }
}
