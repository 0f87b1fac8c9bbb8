// The optimised kernels against the naive references beside them, on odd shapes: the SIMD vector math
// (lengths that leave tails), the LoRS merged-weight build (row counts off its 64-row blocks), and the
// Linalg factorisations (Cholesky against the textbook recurrence, the SVD against one-sided Jacobi).

import Testing

@testable import Surgery

@Suite struct ReferenceKernelTests {
  static let lengths = [1, 7, 8, 9, 37, 100]

  @Test(arguments: lengths)
  func vectorMathMatchesTheDefinitions(n: Int) {
    var r = Random(UInt64(n))
    let x = r.array(n, scale: 20), g = r.array(n, scale: 6), u = r.array(n), d = r.array(n)
    for v in x + [-87, -90, 0, 88] {
      let want = VectorMath.Reference.exp(v)
      #expect(abs(VectorMath.exp(v) - want) <= 2e-7 * max(want, 1e-30) || (v < -87.3 && VectorMath.exp(v) < 2e-38), "exp(\(v))")
    }
    #expect(x.withUnsafeBufferPointer { VectorMath.max($0.baseAddress!, count: n) } == VectorMath.Reference.max(x))

    var e = x
    let m = VectorMath.Reference.max(x)
    let sum = e.withUnsafeMutableBufferPointer { VectorMath.expShiftedSum($0.baseAddress!, count: n, shift: m) }
    let (wantE, wantSum) = VectorMath.Reference.expShifted(x, shift: m)
    for i in 0..<n { #expect(abs(e[i] - wantE[i]) <= 3e-7 * max(wantE[i], 1e-30), "expShifted[\(i)]") }
    #expect(abs(sum - wantSum) <= 1e-6 * wantSum)

    var weight = r.array(n)
    for i in stride(from: 0, to: n, by: 3) { weight[i] = 0 }
    var out = d
    out.withUnsafeMutableBufferPointer { VectorMath.addUnderMask($0.baseAddress!, weight: weight, count: n) }
    #expect(out == VectorMath.Reference.addUnderMask(d, weight: weight))
    #expect(out.enumerated().allSatisfy { weight[$0.offset] != 0 || $0.element.bitPattern == 0 }, "zeros are +0.0")

    var s = [Float](repeating: 0, count: n)
    VectorMath.swiglu(out: &s, gate: g, up: u, count: n)
    let wantS = VectorMath.Reference.swiglu(gate: g, up: u)
    for i in 0..<n { #expect(abs(s[i] - wantS[i]) <= 1e-6 * max(1, abs(wantS[i])), "swiglu[\(i)]") }

    var dgate = [Float](repeating: 0, count: n), dup = [Float](repeating: 0, count: n)
    VectorMath.swigluBackward(dgate: &dgate, dup: &dup, dout: d, gate: g, up: u, count: n)
    let (wantG, wantU) = VectorMath.Reference.swigluBackward(dout: d, gate: g, up: u)
    for i in 0..<n {
      #expect(abs(dgate[i] - wantG[i]) <= 1e-6 * max(1, abs(wantG[i])), "dgate[\(i)]")
      #expect(abs(dup[i] - wantU[i]) <= 1e-6 * max(1, abs(wantU[i])), "dup[\(i)]")
    }
  }

  @Test(arguments: [(1, 1, 1), (67, 13, 3), (130, 5, 7), (64, 64, 16)])
  func lorsMergeMatchesTheDefinition(shape: (Int, Int, Int)) {
    let (o, i, rank) = shape
    var r = Random(UInt64(o * 1000 + i))
    var w = r.array(o * i)
    for k in stride(from: 1, to: w.count, by: 2) { w[k] = 0 }
    let a = r.array(o * rank), b = r.array(rank * i)
    var merged = [Float](repeating: .nan, count: o * i)
    LoRSLinear.merge(into: &merged, weight: w, a: a, b: b, out: o, in: i, rank: rank, scale: 0.75)
    let want = LoRSLinear.mergeNaive(weight: w, a: a, b: b, out: o, in: i, rank: rank, scale: 0.75)
    for k in 0..<(o * i) {
      #expect(abs(merged[k] - want[k]) <= 2e-6 * max(1, abs(want[k])), "[\(k)]")
      #expect((merged[k] == 0) == (w[k] == 0), "mask at [\(k)]")
    }
  }

  /// A symmetric positive-definite matrix X·Xᵀ + n·I.
  static func spd(_ n: Int, seed: UInt64) -> [Float] {
    var r = Random(seed)
    let x = r.array(n * n)
    var a = [Float](repeating: 0, count: n * n)
    for i in 0..<n {
      for j in 0..<n {
        var s = 0.0
        for k in 0..<n { s += Double(x[i * n + k]) * Double(x[j * n + k]) }
        a[i * n + j] = Float(s) + (i == j ? Float(n) : 0)
      }
    }
    return a
  }

  @Test(arguments: [1, 5, 33])
  func choleskyMatchesTheRecurrence(n: Int) throws {
    let a = Self.spd(n, seed: UInt64(n))
    var lower = a
    #expect(Linalg.cholesky(&lower, n: n, .lower))
    let want = try #require(Linalg.choleskyLowerNaive(a, n: n))
    for i in 0..<n { for j in 0...i { #expect(abs(lower[i * n + j] - want[i * n + j]) <= 1e-4 * max(1, abs(want[i * n + j]))) } }
    // Upper: Uᵀ·U = A with U = Lᵀ.
    var upper = a
    #expect(Linalg.cholesky(&upper, n: n, .upper))
    for i in 0..<n { for j in i..<n { #expect(abs(upper[i * n + j] - want[j * n + i]) <= 1e-4 * max(1, abs(want[j * n + i]))) } }
    // The inverse from the factor: A·A⁻¹ = I.
    #expect(Linalg.inverseFromCholesky(&lower, n: n, .lower))
    for i in 0..<n { for j in (i + 1)..<n { lower[i * n + j] = lower[j * n + i] } }
    for i in 0..<n {
      for j in 0..<n {
        var s = 0.0
        for k in 0..<n { s += Double(a[i * n + k]) * Double(lower[k * n + j]) }
        #expect(abs(s - (i == j ? 1 : 0)) < 1e-4)
      }
    }
    var indefinite = a
    indefinite[0] = -1
    #expect(!Linalg.cholesky(&indefinite, n: n, .lower) && Linalg.choleskyLowerNaive(indefinite, n: n) == nil)
  }

  @Test(arguments: [(5, 3), (3, 5), (12, 7), (1, 4)])
  func svdMatchesJacobi(shape: (Int, Int)) throws {
    let (rows, cols) = shape
    var r = Random(UInt64(rows * 31 + cols))
    let a = r.array(rows * cols)
    let (u, s, vt) = try Linalg.svd(a, rows: rows, cols: cols)
    let (wantS, wantVt) = Linalg.svdNaive(a, rows: rows, cols: cols)
    let k = min(rows, cols)
    for j in 0..<k { #expect(abs(s[j] - wantS[j]) <= 1e-5 * max(1, wantS[0]), "s[\(j)]") }
    // Singular vectors agree up to sign (the values here are distinct).
    for j in 0..<k {
      let dot = (0..<cols).reduce(0.0) { $0 + Double(vt[j * cols + $1]) * Double(wantVt[j * cols + $1]) }
      #expect(abs(abs(dot) - 1) < 1e-4, "v[\(j)]")
    }
    // A = U·diag(s)·Vᵀ.
    for i in 0..<rows {
      for c in 0..<cols {
        let x = (0..<k).reduce(0.0) { $0 + Double(u[i * k + $1]) * Double(s[$1]) * Double(vt[$1 * cols + c]) }
        #expect(abs(x - Double(a[i * cols + c])) < 1e-5)
      }
    }
  }
}
