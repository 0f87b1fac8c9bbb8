// The LoRA and SQFT baseline layers: finite-difference checks of their gradients, and the property
// that separates them: SQFT's merge keeps the mask, LoRA's fills it.

import Testing

@testable import Surgery

@Suite struct BaselineTests {
  static let W: [Float] = [0.5, 0, -0.3, 0, 0, 0.8, 0, -0.6, 0.2, 0, 0, 0.9]  // (3, 4), 6 zeros
  static let x: [Float] = [1, 2, -1, 0.5, 0, -1, 3, 1]
  static let gy: [Float] = [1, -0.5, 2, 0.5, 1, -1]

  enum Kind { case lora, sqft }

  /// (y, dx, dA, dB) for A (2, 4), B (3, 2), s = 1.5.
  static func run(_ kind: Kind, a: [Float], b: [Float], input: [Float] = x, dropout: Float = 0) -> ([Float], [Float], [Float], [Float]) {
    var a = a, b = b, gA = [Float](repeating: 0, count: 8), gB = [Float](repeating: 0, count: 6)
    var y = [Float](repeating: 0, count: 6), dx = [Float](repeating: 0, count: 8)
    W.withUnsafeBufferPointer { w in
      a.withUnsafeMutableBufferPointer { ap in
        b.withUnsafeMutableBufferPointer { bp in
          gA.withUnsafeMutableBufferPointer { gap in
            gB.withUnsafeMutableBufferPointer { gbp in
              var drop = AdapterDropout(probability: dropout)
              drop.seed = 12345
              let layer: LinearLayer
              if kind == .lora {
                let factors = LowRankFactors(weight: w.baseAddress!, bias: nil, inFeatures: 4, outFeatures: 3, rank: 2, scale: 1.5,
                  a: ap.baseAddress!, b: bp.baseAddress!, gradA: gap.baseAddress!, gradB: gbp.baseAddress!)
                let lora = LoRALinear(factors)
                lora.dropout = drop
                layer = lora
              } else {
                let sqft = SQFTLinear(LowRankFactors(weight: w.baseAddress!, bias: nil, inFeatures: 4, outFeatures: 3, rank: 2, scale: 1.5,
                  a: ap.baseAddress!, b: bp.baseAddress!, gradA: gap.baseAddress!, gradB: gbp.baseAddress!))
                sqft.dropout = drop
                layer = sqft
              }
              layer.forward(out: &y, inp: input, N: 2)
              layer.backward(dinp: &dx, dout: gy, inp: input, N: 2)
            }
          }
        }
      }
    }
    return (y, dx, gA, gB)
  }

  static let A: [Float] = [0.3, -0.1, 0.2, 0.4, -0.2, 0.5, 0.1, -0.3]
  static let B: [Float] = [0.2, -0.4, 0.1, 0.3, -0.5, 0.25]

  @Test(arguments: [Kind.lora, .sqft])
  func gradientsPassFiniteDifferences(kind: Kind) {
    let (_, dx, gA, gB) = Self.run(kind, a: Self.A, b: Self.B)
    var a = Self.A, b = Self.B, input = Self.x
    checkGradient("\(kind) dA", x: &a, analytic: gA, tolerance: 1e-3) { dot(Self.run(kind, a: $0, b: Self.B).0, Self.gy) }
    checkGradient("\(kind) dB", x: &b, analytic: gB, tolerance: 1e-3) { dot(Self.run(kind, a: Self.A, b: $0).0, Self.gy) }
    checkGradient("\(kind) dx", x: &input, analytic: dx, tolerance: 1e-3) { dot(Self.run(kind, a: Self.A, b: Self.B, input: $0).0, Self.gy) }
  }

  /// With dropout the layer is still a differentiable function of (A, B, x) for a fixed seed; its mask
  /// is regenerated in backward, so the analytic gradients must match finite differences.
  @Test(arguments: [Kind.lora, .sqft])
  func gradientsWithDropoutPassFiniteDifferences(kind: Kind) {
    let p: Float = 0.4
    let (y, dx, gA, gB) = Self.run(kind, a: Self.A, b: Self.B, dropout: p)
    #expect(y != Self.run(kind, a: Self.A, b: Self.B).0, "dropout changed the output")
    var a = Self.A, b = Self.B, input = Self.x
    checkGradient("\(kind) dA", x: &a, analytic: gA, tolerance: 1e-3) { dot(Self.run(kind, a: $0, b: Self.B, dropout: p).0, Self.gy) }
    checkGradient("\(kind) dB", x: &b, analytic: gB, tolerance: 1e-3) { dot(Self.run(kind, a: Self.A, b: $0, dropout: p).0, Self.gy) }
    checkGradient("\(kind) dx", x: &input, analytic: dx, tolerance: 1e-3) { dot(Self.run(kind, a: Self.A, b: Self.B, input: $0, dropout: p).0, Self.gy) }
  }

  @Test func dropoutKeepsAboutOneMinusPAndScalesTheKept() {
    var drop = AdapterDropout(probability: 0.25)
    drop.seed = 99
    let ones = [Float](repeating: 1, count: 100_000)
    var out = [Float](repeating: 0, count: ones.count)
    drop.apply(ones, into: &out, count: ones.count)
    let kept = out.filter { $0 != 0 }
    #expect(abs(Double(kept.count) / Double(ones.count) - 0.75) < 0.01)
    #expect(kept.allSatisfy { abs($0 - 1 / 0.75) < 1e-6 })
    var again = [Float](repeating: 0, count: ones.count)
    drop.apply(ones, into: &again, count: ones.count)
    #expect(again == out, "the mask is a function of the seed")
    // Neighbours are independent (a counter-based hash can fail here): both dropped ≈ p², also across
    // the 8-element halves of a SIMD block and between two seeds.
    for lag in [1, 8, 16] {
      let both = (0..<(ones.count - lag)).filter { out[$0] == 0 && out[$0 + lag] == 0 }.count
      #expect(abs(Double(both) / Double(ones.count - lag) - 0.0625) < 0.004, "lag \(lag): \(both)")
    }
    var other = drop
    other.seed = 100
    var third = [Float](repeating: 0, count: ones.count)
    other.apply(ones, into: &third, count: ones.count)
    let bothSeeds = (0..<ones.count).filter { out[$0] == 0 && third[$0] == 0 }.count
    #expect(abs(Double(bothSeeds) / Double(ones.count) - 0.0625) < 0.004)
    // The backward is the same mask and scale, added: acc + g·keep/(1 − p), also on a ragged tail.
    let count = 1003
    let grad = (0..<count).map { Float($0 % 7) - 3 }
    var acc = (0..<count).map { Float($0 % 5) }
    var dropped = [Float](repeating: 0, count: count)
    drop.apply(grad, into: &dropped, count: count)
    let expected = zip(acc, dropped).map { $0 + $1 }
    drop.accumulateBackward(grad, into: &acc, count: count)
    #expect(acc == expected)
  }

  @Test func sqftKeepsTheMaskAndLoRAFillsIt() {
    // An input that is one-hot per column reads the effective weight back from y.
    func effectiveWeight(_ kind: Kind) -> [Float] {
      var w = [Float](repeating: 0, count: 12)
      for c in 0..<4 {
        var e = [Float](repeating: 0, count: 8)
        e[c] = 1
        let y = Self.run(kind, a: Self.A, b: Self.B, input: e).0
        for r in 0..<3 { w[r * 4 + c] = y[r] }
      }
      return w
    }
    let sqft = effectiveWeight(.sqft), lora = effectiveWeight(.lora)
    #expect(zip(sqft, Self.W).allSatisfy { ($0 == 0) == ($1 == 0) })
    #expect(lora.filter { $0 != 0 }.count > Self.W.filter { $0 != 0 }.count)
  }
}
