// LoRS (hyx1999/LoRS; algorithms.md §3): a sparsity-preserving low-rank adapter on a frozen sparse weight.
//
//   forward:  Wm = (W + s·A·B) ⊙ M,  M = (W ≠ 0),  y = x·Wmᵀ          A: (out, r), B: (r, in) — LoRS names,
//                                                                   swapped against PEFT's lora_A/lora_B
//   backward: dX = dY·Wm, with Wm recomputed (nothing but x and the parameters is saved), and either
//     .reordered (the paper's cheap form, as LoRS implements it: no mask, no scale, no (out × in) product)
//        dA = dYᵀ·(X·Bᵀ),  dB = (dY·A)ᵀ·X
//     .exact (the true gradient of the forward, for comparison; forms G = dYᵀ·X once)
//        dA = s·(G ⊙ M)·Bᵀ,  dB = s·Aᵀ·(G ⊙ M)
//
// The merged weight is recomputed into a workspace shared by all layers (one (out × in) buffer at a time).

public enum LoRSGradient: String, Sendable, CaseIterable {
  case reordered, exact
}

/// A reusable (out × in) buffer for merged weights and, in the exact form, the masked gradient.
public final class AdapterWorkspace {
  var buffer: UnsafeMutablePointer<Float>
  var capacity: Int
  public init() {
    capacity = 0
    buffer = .allocate(capacity: 1)
  }
  deinit { buffer.deallocate() }
  func pointer(_ count: Int) -> UnsafeMutablePointer<Float> {
    if count > capacity {
      buffer.deallocate()
      buffer = .allocate(capacity: count)
      capacity = count
    }
    return buffer
  }
}

public final class LoRSLinear: RecomputedWeightLayer {
  /// The frozen weight (its zeros are the mask) and the factors in LoRS' naming: A (out, r), B (r, in).
  public let factors: LowRankFactors
  public var gradient: LoRSGradient
  let workspace: AdapterWorkspace

  public init(_ factors: LowRankFactors, gradient: LoRSGradient = .reordered, workspace: AdapterWorkspace) {
    self.factors = factors
    self.gradient = gradient
    self.workspace = workspace
  }

  public var inFeatures: Int { factors.inFeatures }
  public var outFeatures: Int { factors.outFeatures }
  public var rank: Int { factors.rank }
  public var scale: Float { factors.scale }
  var weight: UnsafePointer<Float> { factors.weight }
  var bias: UnsafePointer<Float>? { factors.bias }
  public var a: UnsafeMutablePointer<Float> { factors.a }
  public var b: UnsafeMutablePointer<Float> { factors.b }
  public var gradA: UnsafeMutablePointer<Float> { factors.gradA }
  public var gradB: UnsafeMutablePointer<Float> { factors.gradB }

  /// Wm = (W + s·A·B) ⊙ M into `out` (out, in).
  public func mergedWeight(into out: UnsafeMutablePointer<Float>) {
    Self.merge(into: out, weight: weight, a: a, b: b, out: outFeatures, in: inFeatures, rank: rank, scale: scale)
  }

  /// (W + s·A·B) ⊙ M for A (out, r), B (r, in), built 64 rows at a time so that the product s·A·B and
  /// the masked add meet in cache: W is read once and the merged weight written once. Also merge's kernel.
  public static func merge(
    into dst: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
    out o: Int, in i: Int, rank r: Int, scale: Float
  ) {
    for r0 in stride(from: 0, to: o, by: 64) {
      let m = min(64, o - r0)
      Gemm.sgemm(dst + r0 * i, a + r0 * r, b, m: m, n: i, k: r, alpha: scale)
      VectorMath.addUnderMask(dst + r0 * i, weight: weight + r0 * i, count: m * i)
    }
  }

  /// The definition, for tests: (W + s·A·B) ⊙ M element by element, the product summed in Double.
  public static func mergeNaive(weight: [Float], a: [Float], b: [Float], out o: Int, in i: Int, rank r: Int, scale: Float) -> [Float] {
    (0..<(o * i)).map { k in
      let (row, col) = (k / i, k % i)
      guard weight[k] != 0 else { return 0 }
      var delta = 0.0
      for j in 0..<r { delta += Double(a[row * r + j]) * Double(b[j * i + col]) }
      return weight[k] + Float(Double(scale) * delta)
    }
  }

  public func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    let (o, i, r) = (outFeatures, inFeatures, rank)
    let wm = workspace.pointer(o * i)
    mergedWeight(into: wm)
    // dX (N, in) += dY (N, out) · Wm (out, in)
    Gemm.sgemm(dinp, dout, wm, m: N, n: i, k: o, beta: 1)
    switch gradient {
    case .reordered:
      // dA (out, r) += dYᵀ (out, N) · (X·Bᵀ) (N, r);  dB (r, in) += (dY·A)ᵀ (r, N) · X (N, in)
      let t = UnsafeMutablePointer<Float>.allocate(capacity: N * r)
      defer { t.deallocate() }
      Gemm.sgemm(t, inp, b, m: N, n: r, k: i, transB: true)
      Gemm.sgemm(gradA, dout, t, m: o, n: r, k: N, transA: true, beta: 1)
      Gemm.sgemm(t, dout, a, m: N, n: r, k: o)
      Gemm.sgemm(gradB, t, inp, m: r, n: i, k: N, transA: true, beta: 1)
    case .exact:
      // G = dYᵀ·X ⊙ M (out, in), reusing the workspace now that dX is done.
      let g = wm
      Gemm.sgemm(g, dout, inp, m: o, n: i, k: N, transA: true)
      for k in 0..<(o * i) where weight[k] == 0 { g[k] = 0 }
      // dA += s·G·Bᵀ ; dB += s·Aᵀ·G
      Gemm.sgemm(gradA, g, b, m: o, n: r, k: i, transB: true, alpha: scale, beta: 1)
      Gemm.sgemm(gradB, a, g, m: r, n: i, k: o, transA: true, alpha: scale, beta: 1)
    }
  }
}
