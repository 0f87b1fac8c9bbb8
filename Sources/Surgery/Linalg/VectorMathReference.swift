// The definitions the SIMD kernels of VectorMath compute, element by element in Double with libm's exp:
// the naive references the kernel tests compare against on odd lengths (tails included).

import Foundation

extension VectorMath {
  public enum Reference {
    public static func exp(_ x: Float) -> Float { Float(Foundation.exp(Double(x))) }

    public static func max(_ x: [Float]) -> Float { x.reduce(-.infinity) { Swift.max($0, $1) } }

    /// (exp(x − shift) element-wise, Σ of it); the difference rounded to Float first, as the kernel takes it.
    public static func expShifted(_ x: [Float], shift: Float) -> ([Float], Float) {
      let e = x.map { Foundation.exp(Double($0 - shift)) }
      return (e.map { Float($0) }, Float(e.reduce(0, +)))
    }

    /// w ≠ 0 ? w + delta : 0.
    public static func addUnderMask(_ delta: [Float], weight: [Float]) -> [Float] {
      zip(delta, weight).map { d, w in w != 0 ? w + d : 0 }
    }

    static func sigmoid(_ g: Double) -> Double { 1 / (1 + Foundation.exp(-g)) }

    /// silu(gate) ⊙ up.
    public static func swiglu(gate: [Float], up: [Float]) -> [Float] {
      zip(gate, up).map { g, u in Float(Double(g) * sigmoid(Double(g)) * Double(u)) }
    }

    /// (dgate, dup) of swiglu for an output gradient dout.
    public static func swigluBackward(dout: [Float], gate: [Float], up: [Float]) -> ([Float], [Float]) {
      var dgate: [Float] = [], dup: [Float] = []
      for i in dout.indices {
        let (d, g, u) = (Double(dout[i]), Double(gate[i]), Double(up[i]))
        let s = sigmoid(g)
        dgate.append(Float(d * u * s * (1 + g * (1 - s))))
        dup.append(Float(d * g * s))
      }
      return (dgate, dup)
    }
  }
}
