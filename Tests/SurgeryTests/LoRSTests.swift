// The LoRS layer against the test vector of algorithms.md §11.4 (y, dX, both gradient forms, the
// merge keeping the sparsity), and a finite-difference check of the exact gradient form.

import Testing

@testable import Surgery

@Suite struct LoRSTests {
  static let W: [Float] = [0.5, 0, -0.3, 0, 0, 0.8, 0, -0.6, 0.2, 0, 0, 0.9]
  static let A: [Float] = [0.1, -0.2, 0.3, 0.05, -0.15, 0.25]
  static let B: [Float] = [0.4, -0.1, 0.2, 0.3, -0.2, 0.5, 0.1, -0.3]
  static let x: [Float] = [1, 2, -1, 0.5, 0, -1, 3, 1]
  static let gy: [Float] = [1, -0.5, 2, 0.5, 1, -1]
  static let s = Float(2 / 2.0.squareRoot())

  /// Runs forward and backward with the given form; returns (y, dx, dA, dB, Wm).
  static func run(_ form: LoRSGradient, a: [Float] = A, b: [Float] = B) -> ([Float], [Float], [Float], [Float], [Float]) {
    var a = a, b = b
    var gA = [Float](repeating: 0, count: 6), gB = [Float](repeating: 0, count: 8)
    var y = [Float](repeating: 0, count: 6), dx = [Float](repeating: 0, count: 8), wm = [Float](repeating: 0, count: 12)
    W.withUnsafeBufferPointer { w in
      a.withUnsafeMutableBufferPointer { ap in
        b.withUnsafeMutableBufferPointer { bp in
          gA.withUnsafeMutableBufferPointer { gap in
            gB.withUnsafeMutableBufferPointer { gbp in
              let factors = LowRankFactors(
                weight: w.baseAddress!, bias: nil, inFeatures: 4, outFeatures: 3, rank: 2, scale: s,
                a: ap.baseAddress!, b: bp.baseAddress!, gradA: gap.baseAddress!, gradB: gbp.baseAddress!)
              let layer = LoRSLinear(factors, gradient: form, workspace: AdapterWorkspace())
              layer.forward(out: &y, inp: x, N: 2)
              layer.backward(dinp: &dx, dout: gy, inp: x, N: 2)
              layer.mergedWeight(into: &wm)
            }
          }
        }
      }
    }
    return (y, dx, gA, gB, wm)
  }

  static func close(_ a: [Float], _ b: [Float], _ tolerance: Float = 2e-6) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= tolerance * max(1, abs($1)) }
  }

  @Test func forwardInputGradientAndMerge() {
    let (y, dx, _, _, wm) = Self.run(.reordered)
    #expect(Self.close(wm, [0.613137, 0, -0.3, 0, 0, 0.792929, 0, -0.493934, 0.044437, 0, 0, 0.730294]))
    #expect(Self.close(y, [0.913137, 1.338891, 0.409584, -0.9, -1.286863, 0.730294]))
    #expect(Self.close(dx, [0.70201, -0.396464, -0.3, 1.707556, 0.262132, 0.792929, -0.15, -1.224228]))
    // The merge keeps exactly the base's 6 non-zeros.
    #expect(wm.filter { $0 != 0 }.count == 6)
    #expect(zip(wm, Self.W).allSatisfy { ($0 == 0) == ($1 == 0) })
  }

  @Test func reorderedGradientIsTheLoRSImplementation() {
    let (_, _, gA, gB, _) = Self.run(.reordered)
    #expect(Self.close(gA, [0.65, 0.3, 0.925, -0.775, -0.7, 1.6]))
    #expect(Self.close(gB, [-0.35, -1.2, 1.85, 0.325, 0.275, 0.85, -1.175, -0.1625]))
  }

  @Test func exactGradientIsTheMaskedOne() {
    let (_, _, gA, gB, _) = Self.run(.exact)
    #expect(Self.close(gA, [0.707107, -0.212132, 0.601041, -1.732412, 1.131371, -0.565685]))
    #expect(Self.close(gB, [-0.282843, -0.848528, 0.070711, 0.318198, 0.424264, -0.141421, -0.141421, 0.053033]))
  }

  /// The exact form is the derivative of L = Σ y ⊙ gy with respect to A and B.
  @Test func exactGradientPassesFiniteDifferences() {
    let (_, _, gA, gB, _) = Self.run(.exact)
    func loss(_ a: [Float], _ b: [Float]) -> Double { dot(Self.run(.exact, a: a, b: b).0, Self.gy) }
    var a = Self.A, b = Self.B
    checkGradient("LoRS dA", x: &a, analytic: gA, step: 1e-2, tolerance: 1e-3) { loss($0, Self.B) }
    checkGradient("LoRS dB", x: &b, analytic: gB, step: 1e-2, tolerance: 1e-3) { loss(Self.A, $0) }
  }
}
