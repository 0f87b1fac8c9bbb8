// The elementwise layers of a Llama block, forward and backward in pairs (llm.c style): outputs first,
// then saved statistics, then inputs, then weights, dims last. Backward functions ACCUMULATE (+=) into
// the input gradient, so callers zero a gradient buffer once and let every consumer add to it.
// Statistics are accumulated in Double where PyTorch would accumulate in float32 over long rows: the
// difference is far below the tolerances of the golden tests, and the results are order-independent.

import Foundation
import Formats

public enum RMSNorm {
  /// out[n,:] = x[n,:] / sqrt(mean(x[n,:]²) + eps) * (weight + offset). Saves rstd[n] for backward.
  /// x, out: (N, C); weight: (C); rstd: (N). HF LlamaRMSNorm; offset 1 is Gemma's (1 + w) norm.
  public static func forward(
    out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
    weight: UnsafePointer<Float>, eps: Float, N: Int, C: Int, offset: Float = 0
  ) {
    for n in 0..<N {
      let x = inp + n * C
      var sum: Float = 0
      for c in 0..<C { sum += x[c] * x[c] }
      let r = 1 / (sum / Float(C) + eps).squareRoot()
      rstd[n] = r
      let o = out + n * C
      for c in 0..<C { o[c] = (weight[c] + offset) * (x[c] * r) }
    }
  }

  /// dinp += rstd·(w⊙dout) − x·rstd³·mean(x⊙w⊙dout) with w = weight + offset; dweight (if given) +=
  /// Σ_n dout⊙x·rstd.
  public static func backward(
    dinp: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
    inp: UnsafePointer<Float>, weight: UnsafePointer<Float>, rstd: UnsafePointer<Float>, N: Int, C: Int, offset: Float = 0
  ) {
    for n in 0..<N {
      let x = inp + n * C, dy = dout + n * C, dx = dinp + n * C
      let r = rstd[n]
      var dot: Float = 0
      for c in 0..<C { dot += dy[c] * (weight[c] + offset) * x[c] }
      let k = dot * r * r * r / Float(C)
      for c in 0..<C { dx[c] += dy[c] * (weight[c] + offset) * r - x[c] * k }
      if let dweight { for c in 0..<C { dweight[c] += dy[c] * x[c] * r } }
    }
  }
}

/// Rotary position embedding in HF's rotate-half layout: within each head of size hd, element i pairs
/// with i + hd/2. Angles are computed once per (position, frequency) into cos/sin tables, in float32
/// exactly as transformers does (inv_freq = 1 / base^(2i/hd), angle = pos · inv_freq).
public struct RoPE: Sendable {
  public let headDim: Int
  public let maxPositions: Int
  /// (maxPositions, hd/2) each.
  let cosTable: [Float]
  let sinTable: [Float]

  public init(headDim: Int, maxPositions: Int, theta: Double, scaling: RopeScaling? = nil) {
    self.headDim = headDim
    self.maxPositions = maxPositions
    let half = headDim / 2
    var invFreq = (0..<half).map { i -> Float in
      let exponent = Float(2 * i) / Float(headDim)
      return 1 / Float(pow(theta, Double(exponent)))
    }
    if let s = scaling, s.type == "llama3" { invFreq = RoPE.llama3(invFreq, s) }
    if let s = scaling, s.type == "linear" { invFreq = invFreq.map { $0 / Float(s.factor) } }
    var c = [Float](repeating: 0, count: maxPositions * half)
    var sn = c
    for p in 0..<maxPositions {
      for i in 0..<half {
        let angle = Float(p) * invFreq[i]
        c[p * half + i] = Float(cos(Double(angle)))
        sn[p * half + i] = Float(sin(Double(angle)))
      }
    }
    cosTable = c
    sinTable = sn
  }

  /// HF `_compute_llama3_parameters`: long wavelengths are slowed by `factor`, short ones kept, and the
  /// band between them interpolated.
  static func llama3(_ invFreq: [Float], _ s: RopeScaling) -> [Float] {
    let lowWavelen = Double(s.originalMaxPositionEmbeddings) / s.lowFreqFactor
    let highWavelen = Double(s.originalMaxPositionEmbeddings) / s.highFreqFactor
    return invFreq.map { f in
      let wavelen = 2 * Double.pi / Double(f)
      if wavelen < highWavelen { return f }
      if wavelen > lowWavelen { return Float(Double(f) / s.factor) }
      let smooth = (Double(s.originalMaxPositionEmbeddings) / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
      return Float((1 - smooth) * Double(f) / s.factor + smooth * Double(f))
    }
  }

  /// In place on x: (B, T, heads, hd), positions 0..<T for every sequence.
  public func forward(_ x: UnsafeMutablePointer<Float>, B: Int, T: Int, heads: Int) {
    apply(x, B: B, T: T, heads: heads, sign: 1)
  }

  /// In place on x: (T, heads, hd) of one sequence at positions start..<start+T (decoding with a cache).
  public func forward(_ x: UnsafeMutablePointer<Float>, start: Int, T: Int, heads: Int) {
    precondition(start + T <= maxPositions, "RoPE tables hold \(maxPositions) positions")
    apply(x, B: 1, T: T, heads: heads, sign: 1, start: start)
  }

  /// The transpose of the rotation, in place on the gradient (RoPE is orthogonal: backward rotates by −θ).
  public func backward(_ dx: UnsafeMutablePointer<Float>, B: Int, T: Int, heads: Int) {
    apply(dx, B: B, T: T, heads: heads, sign: -1)
  }

  private func apply(_ x: UnsafeMutablePointer<Float>, B: Int, T: Int, heads: Int, sign: Float, start: Int = 0) {
    let half = headDim / 2
    cosTable.withUnsafeBufferPointer { cosT in
      sinTable.withUnsafeBufferPointer { sinT in
        for b in 0..<B {
          for t in 0..<T {
            let cs = cosT.baseAddress! + (start + t) * half, sn = sinT.baseAddress! + (start + t) * half
            for h in 0..<heads {
              let v = x + ((b * T + t) * heads + h) * headDim
              for i in 0..<half {
                let x1 = v[i], x2 = v[i + half]
                let s = sign * sn[i]
                v[i] = x1 * cs[i] - x2 * s
                v[i + half] = x2 * cs[i] + x1 * s
              }
            }
          }
        }
      }
    }
  }
}

public enum SwiGLU {
  /// out = silu(gate) ⊙ up, silu(g) = g·σ(g). gate, up, out: (N·I).
  public static func forward(
    out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int
  ) {
    VectorMath.swiglu(out: out, gate: gate, up: up, count: count)
  }

  /// dgate += dout·up·σ(g)(1 + g(1 − σ(g))); dup += dout·silu(g).
  public static func backward(
    dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
    gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int
  ) {
    VectorMath.swigluBackward(dgate: dgate, dup: dup, dout: dout, gate: gate, up: up, count: count)
  }
}

/// Gemma's MLP activation: out = gelu_tanh(gate) ⊙ up (HF `gelu_pytorch_tanh`).
public enum GeGLU {
  public static func forward(out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
    VectorMath.geglu(out: out, gate: gate, up: up, count: count)
  }

  /// dgate += dout·up·gelu'(g); dup += dout·gelu(g).
  public static func backward(
    dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
    gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int
  ) {
    VectorMath.gegluBackward(dgate: dgate, dup: dup, dout: dout, gate: gate, up: up, count: count)
  }
}

public enum Embedding {
  /// out[n,:] = table[tokens[n],:]. table: (V, C).
  public static func forward(
    out: UnsafeMutablePointer<Float>, tokens: UnsafePointer<Int32>, table: UnsafePointer<Float>, N: Int, C: Int
  ) {
    for n in 0..<N { (out + n * C).update(from: table + Int(tokens[n]) * C, count: C) }
  }
}

/// y += x, elementwise (residual connections and gradient accumulation).
@inline(__always)
public func accumulate(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
  for i in 0..<count { y[i] += x[i] }
}
