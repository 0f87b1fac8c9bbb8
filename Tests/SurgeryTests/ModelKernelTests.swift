// Finite-difference checks of every hand-written backward (RMSNorm, RoPE, attention with GQA, SwiGLU,
// the LM head's cross-entropy), and the attention kernel against a naive reference. Each check takes
// L = Σ out ⊙ G for a random G, so dL/dout = G, and compares the analytic input gradient with central
// differences (computed in Float with a step that keeps the rounding error well under the tolerance).

import Testing

@testable import Formats
@testable import Surgery

struct Random {
  var state: UInt64
  init(_ seed: UInt64) { state = seed }
  mutating func next() -> Float {
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return Float(Int64(bitPattern: state >> 11) % 2_000_001 - 1_000_000) / 1_000_000
  }
  mutating func array(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in next() * scale } }
}

/// Checks analytic gradients against central differences of `loss` at `x`.
func checkGradient(
  _ name: String, x: inout [Float], analytic: [Float], step: Float = 1e-2, tolerance: Float = 2e-2,
  loss: ([Float]) -> Double
) {
  var worst: Float = 0
  for i in x.indices {
    let saved = x[i]
    x[i] = saved + step
    let plus = loss(x)
    x[i] = saved - step
    let minus = loss(x)
    x[i] = saved
    let numeric = Float((plus - minus) / Double(2 * step))
    let error = abs(numeric - analytic[i]) / max(1, abs(numeric))
    worst = max(worst, error)
  }
  #expect(worst < tolerance, "\(name): worst relative error \(worst)")
}

func dot(_ a: [Float], _ b: [Float]) -> Double { zip(a, b).reduce(0) { $0 + Double($1.0) * Double($1.1) } }

@Suite struct ModelKernelTests {
  @Test func rmsNormBackward() {
    var r = Random(1)
    let (N, C) = (3, 8)
    var x = r.array(N * C, scale: 2)
    let w = r.array(C).map { 1 + $0 / 2 }
    let g = r.array(N * C)
    func forward(_ x: [Float]) -> [Float] {
      var out = [Float](repeating: 0, count: N * C), rstd = [Float](repeating: 0, count: N)
      RMSNorm.forward(out: &out, rstd: &rstd, inp: x, weight: w, eps: 1e-5, N: N, C: C)
      return out
    }
    var out = [Float](repeating: 0, count: N * C), rstd = [Float](repeating: 0, count: N)
    RMSNorm.forward(out: &out, rstd: &rstd, inp: x, weight: w, eps: 1e-5, N: N, C: C)
    var dx = [Float](repeating: 0, count: N * C), dw = [Float](repeating: 0, count: C)
    RMSNorm.backward(dinp: &dx, dweight: &dw, dout: g, inp: x, weight: w, rstd: rstd, N: N, C: C)
    checkGradient("rmsnorm dx", x: &x, analytic: dx) { dot(forward($0), g) }
    var wv = w
    checkGradient("rmsnorm dw", x: &wv, analytic: dw) { w2 in
      var o = [Float](repeating: 0, count: N * C), rs = [Float](repeating: 0, count: N)
      RMSNorm.forward(out: &o, rstd: &rs, inp: x, weight: w2, eps: 1e-5, N: N, C: C)
      return dot(o, g)
    }
  }

  @Test func ropeBackwardIsTheTransposedRotation() {
    var r = Random(2)
    let (B, T, H, hd) = (2, 5, 3, 8)
    let rope = RoPE(headDim: hd, maxPositions: 16, theta: 10000)
    var x = r.array(B * T * H * hd)
    let g = r.array(x.count)
    func forward(_ x: [Float]) -> [Float] {
      var y = x
      y.withUnsafeMutableBufferPointer { rope.forward($0.baseAddress!, B: B, T: T, heads: H) }
      return y
    }
    var dx = g
    dx.withUnsafeMutableBufferPointer { rope.backward($0.baseAddress!, B: B, T: T, heads: H) }
    checkGradient("rope", x: &x, analytic: dx) { dot(forward($0), g) }
    // Position 0 is the identity.
    let y = forward(x)
    for i in 0..<(H * hd) { #expect(y[i] == x[i]) }
  }

  @Test func ropeMatchesTheRotateHalfDefinition() {
    let hd = 4
    let rope = RoPE(headDim: hd, maxPositions: 4, theta: 10000)
    var x: [Float] = [1, 2, 3, 4, 1, 2, 3, 4]  // T = 2, one head
    x.withUnsafeMutableBufferPointer { rope.forward($0.baseAddress!, B: 1, T: 2, heads: 1) }
    // position 1: angles 1 and 1/100 for the pairs (0,2) and (1,3).
    let (c0, s0, c1, s1) = (Float(cos(1.0)), Float(sin(1.0)), Float(cos(0.01)), Float(sin(0.01)))
    let want: [Float] = [1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1]
    for i in 0..<4 { #expect(abs(x[4 + i] - want[i]) < 1e-6) }
  }

  @Test func swigluBackward() {
    var r = Random(3)
    let n = 20
    var gate = r.array(n, scale: 3), up = r.array(n, scale: 2)
    let g = r.array(n)
    func forward(_ gate: [Float], _ up: [Float]) -> [Float] {
      var o = [Float](repeating: 0, count: n)
      SwiGLU.forward(out: &o, gate: gate, up: up, count: n)
      return o
    }
    var dgate = [Float](repeating: 0, count: n), dup = [Float](repeating: 0, count: n)
    SwiGLU.backward(dgate: &dgate, dup: &dup, dout: g, gate: gate, up: up, count: n)
    let upCopy = up, gateCopy = gate
    checkGradient("swiglu dgate", x: &gate, analytic: dgate) { dot(forward($0, upCopy), g) }
    checkGradient("swiglu dup", x: &up, analytic: dup) { dot(forward(gateCopy, $0), g) }
  }

  /// Gemma's GeGLU: forward against the tanh-GELU definition in Double (over the range where tanh
  /// saturates too), backward against finite differences.
  @Test func gegluForwardAndBackward() {
    var r = Random(13)
    let n = 21
    var gate = r.array(n, scale: 3), up = r.array(n, scale: 2)
    gate[0] = 12
    gate[1] = -12
    gate[2] = 1e-4
    let g = r.array(n)
    func forward(_ gate: [Float], _ up: [Float]) -> [Float] {
      var o = [Float](repeating: 0, count: n)
      GeGLU.forward(out: &o, gate: gate, up: up, count: n)
      return o
    }
    let out = forward(gate, up)
    for i in 0..<n {
      let x = Double(gate[i])
      let want = 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x))) * Double(up[i])
      #expect(abs(Double(out[i]) - want) <= 2e-6 * max(1, abs(want)), "\(i): \(out[i]) vs \(want)")
    }
    var dgate = [Float](repeating: 0, count: n), dup = [Float](repeating: 0, count: n)
    GeGLU.backward(dgate: &dgate, dup: &dup, dout: g, gate: gate, up: up, count: n)
    let upCopy = up, gateCopy = gate
    checkGradient("geglu dgate", x: &gate, analytic: dgate) { dot(forward($0, upCopy), g) }
    checkGradient("geglu dup", x: &up, analytic: dup) { dot(forward(gateCopy, $0), g) }
  }

  @Test(arguments: [(1, 4, 4, 2, 4), (2, 5, 3, 1, 6), (2, 7, 4, 4, 8), (1, 130, 2, 1, 4)])
  func attentionForwardMatchesNaive(shape: (Int, Int, Int, Int, Int)) {
    let (B, T, H, KV, hd) = shape
    var r = Random(4)
    let q = r.array(B * T * H * hd), k = r.array(B * T * KV * hd), v = r.array(B * T * KV * hd)
    var out = [Float](repeating: 0, count: q.count), lse = [Float](repeating: 0, count: B * H * T)
    Attention.forward(out: &out, lse: &lse, q: q, k: k, v: v, B: B, T: T, H: H, KV: KV, hd: hd)
    let want = Attention.forwardNaive(q: q, k: k, v: v, B: B, T: T, H: H, KV: KV, hd: hd)
    for i in out.indices { #expect(abs(out[i] - want[i]) < 1e-5) }
  }

  @Test func attentionBackwardWithGQA() {
    let (B, T, H, KV, hd) = (2, 4, 4, 2, 4)
    var r = Random(5)
    var q = r.array(B * T * H * hd), k = r.array(B * T * KV * hd), v = r.array(B * T * KV * hd)
    let g = r.array(q.count)
    func loss(_ q: [Float], _ k: [Float], _ v: [Float]) -> Double {
      var out = [Float](repeating: 0, count: q.count), lse = [Float](repeating: 0, count: B * H * T)
      Attention.forward(out: &out, lse: &lse, q: q, k: k, v: v, B: B, T: T, H: H, KV: KV, hd: hd)
      return dot(out, g)
    }
    var out = [Float](repeating: 0, count: q.count), lse = [Float](repeating: 0, count: B * H * T)
    Attention.forward(out: &out, lse: &lse, q: q, k: k, v: v, B: B, T: T, H: H, KV: KV, hd: hd)
    var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count), dv = dk
    Attention.backward(dq: &dq, dk: &dk, dv: &dv, dout: g, out: out, lse: lse, q: q, k: k, v: v, B: B, T: T, H: H, KV: KV, hd: hd)
    let (q0, k0, v0) = (q, k, v)
    checkGradient("attention dq", x: &q, analytic: dq) { loss($0, k0, v0) }
    checkGradient("attention dk", x: &k, analytic: dk) { loss(q0, $0, v0) }
    checkGradient("attention dv", x: &v, analytic: dv) { loss(q0, k0, $0) }
  }

  /// Past one 64-row block, on sampled coordinates (a full finite-difference sweep would be slow); also
  /// with Gemma 3's sliding window (5 keys; 30, so the second block starts its keys at 35) and its scale.
  @Test(arguments: [(Int?.none, Float?.none), (5, nil), (30, 0.3)])
  func attentionBackwardAcrossRowBlocks(window: Int?, scale: Float?) {
    let (B, T, H, KV, hd) = (1, 70, 2, 1, 4)
    var r = Random(8)
    var q = r.array(B * T * H * hd), k = r.array(B * T * KV * hd), v = r.array(B * T * KV * hd)
    let g = r.array(q.count)
    func loss(_ q: [Float], _ k: [Float], _ v: [Float]) -> Double {
      var out = [Float](repeating: 0, count: q.count), lse = [Float](repeating: 0, count: B * H * T)
      Attention.forward(out: &out, lse: &lse, q: q, k: k, v: v, B: B, T: T, H: H, KV: KV, hd: hd, window: window, scale: scale)
      return dot(out, g)
    }
    var out = [Float](repeating: 0, count: q.count), lse = [Float](repeating: 0, count: B * H * T)
    Attention.forward(out: &out, lse: &lse, q: q, k: k, v: v, B: B, T: T, H: H, KV: KV, hd: hd, window: window, scale: scale)
    let want = Attention.forwardNaive(q: q, k: k, v: v, B: B, T: T, H: H, KV: KV, hd: hd, window: window, scale: scale.map(Double.init))
    #expect(maxAbsDiff(out, want) < 1e-5)
    var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count), dv = dk
    Attention.backward(
      dq: &dq, dk: &dk, dv: &dv, dout: g, out: out, lse: lse, q: q, k: k, v: v, B: B, T: T, H: H, KV: KV, hd: hd, window: window,
      scale: scale)
    let step: Float = 1e-2
    var worst: Float = 0
    for sample in 0..<40 {
      let which = sample % 3
      let n = which == 0 ? q.count : k.count
      let i = (sample * 7919) % n
      func bump(_ delta: Float) -> Double {
        switch which {
        case 0: q[i] += delta; defer { q[i] -= delta }; return loss(q, k, v)
        case 1: k[i] += delta; defer { k[i] -= delta }; return loss(q, k, v)
        default: v[i] += delta; defer { v[i] -= delta }; return loss(q, k, v)
        }
      }
      let numeric = Float((bump(step) - bump(-step)) / Double(2 * step))
      let analytic = [dq, dk, dv][which][i]
      worst = max(worst, abs(numeric - analytic) / max(1, abs(numeric)))
    }
    #expect(worst < 2e-2, "worst relative error \(worst)")
  }

  @Test func crossEntropyBackwardAndChunking() {
    let (N, C, V) = (5, 6, 9)
    var r = Random(6)
    var x = r.array(N * C, scale: 2)
    let w = r.array(V * C)
    let targets: [Int32] = [3, -1, 0, 8, 5]
    func run(_ x: [Float], chunk: Int, dx: UnsafeMutablePointer<Float>?) -> LMHeadResult {
      var scratch = [Float](repeating: 0, count: chunk * V)
      var nll = [Float](repeating: 0, count: N)
      return LMHead.run(x: x, weight: w, targets: targets, N: N, C: C, V: V, chunk: chunk, scratch: &scratch, tokenNLL: &nll, dx: dx)
    }
    var dx = [Float](repeating: 0, count: N * C)
    let result = dx.withUnsafeMutableBufferPointer { run(x, chunk: 2, dx: $0.baseAddress!) }
    #expect(result.count == 4)
    #expect(abs(run(x, chunk: 5, dx: nil).loss - result.loss) < 1e-6)
    checkGradient("cross-entropy dx", x: &x, analytic: dx) { Double(run($0, chunk: 3, dx: nil).loss) }
    // The ignored position gets no gradient.
    #expect(dx[C..<(2 * C)].allSatisfy { $0 == 0 })
  }

  @Test func denseLinearWithBias() {
    var r = Random(9)
    let (N, inF, outF) = (3, 5, 4)
    let w = r.array(outF * inF), b = r.array(outF), x = r.array(N * inF), g = r.array(N * outF)
    var dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: outF)
    var y = [Float](repeating: 0, count: N * outF), dx = [Float](repeating: 0, count: N * inF)
    w.withUnsafeBufferPointer { wp in
      b.withUnsafeBufferPointer { bp in
        dw.withUnsafeMutableBufferPointer { dwp in
          db.withUnsafeMutableBufferPointer { dbp in
            let layer = DenseLinear(weight: wp.baseAddress!, bias: bp.baseAddress!, inFeatures: inF, outFeatures: outF)
            layer.weightGrad = dwp.baseAddress
            layer.biasGrad = dbp.baseAddress
            layer.forward(out: &y, inp: x, N: N)
            layer.backward(dinp: &dx, dout: g, inp: x, N: N)
          }
        }
      }
    }
    for n in 0..<N {
      for o in 0..<outF {
        var want = b[o]
        for i in 0..<inF { want += x[n * inF + i] * w[o * inF + i] }
        #expect(abs(y[n * outF + o] - want) < 1e-5)
      }
    }
    for o in 0..<outF { #expect(abs(db[o] - (0..<N).reduce(0) { $0 + g[$1 * outF + o] }) < 1e-5) }
    for i in 0..<inF { #expect(abs(dx[i] - (0..<outF).reduce(0) { $0 + g[$1] * w[$1 * inF + i] }) < 1e-5) }
    #expect(abs(dw[0] - (0..<N).reduce(0) { $0 + g[$1 * outF] * x[$1 * inF] }) < 1e-5)
  }

  @Test func stridedGemmMatchesNaive() {
    var r = Random(7)
    let (m, n, k, lda, ldb, ldc) = (5, 3, 4, 9, 7, 6)
    let a = r.array(m * lda), b = r.array(n * ldb)
    var c1 = r.array(m * ldc)
    var c2 = c1
    Gemm.sgemm(&c1, a, b, m: m, n: n, k: k, transB: true, alpha: 1, beta: 1, lda: lda, ldb: ldb, ldc: ldc)
    Gemm.sgemmNaive(&c2, a, b, m: m, n: n, k: k, transB: true, alpha: 1, beta: 1, lda: lda, ldb: ldb, ldc: ldc)
    for i in c1.indices { #expect(abs(c1[i] - c2[i]) < 1e-5) }
  }
}

import Foundation
