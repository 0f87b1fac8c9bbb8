// The baselines LoRS is compared with (algorithms.md §3.6, §4), as LinearLayers. PEFT naming here:
// A = lora_A (r, in), B = lora_B (out, r), ΔW = s·B·A.
//
//   LoRA:  y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ — dense: merging it fills the zeros of a sparse W.
//   SQFT:  y = x·(W + s·(B·A) ⊙ M)ᵀ with the merged weight and the mask KEPT from forward to backward (the
//          memory cost LoRS removes); exact gradients dB = s·(G ⊙ M)·Aᵀ, dA = s·Bᵀ·(G ⊙ M), G = dYᵀ·X.

/// A frozen weight with PEFT-named low-rank factors and their gradients, shared by the baselines.
public struct LowRankFactors {
  public let inFeatures: Int
  public let outFeatures: Int
  public let rank: Int
  public let scale: Float
  let weight: UnsafePointer<Float>
  let bias: UnsafePointer<Float>?
  public let a: UnsafeMutablePointer<Float>  // (r, in)
  public let b: UnsafeMutablePointer<Float>  // (out, r)
  public let gradA: UnsafeMutablePointer<Float>
  public let gradB: UnsafeMutablePointer<Float>

  public init(
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, inFeatures: Int, outFeatures: Int, rank: Int, scale: Float,
    a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>, gradA: UnsafeMutablePointer<Float>, gradB: UnsafeMutablePointer<Float>
  ) {
    (self.weight, self.bias, self.inFeatures, self.outFeatures, self.rank, self.scale) = (weight, bias, inFeatures, outFeatures, rank, scale)
    (self.a, self.b, self.gradA, self.gradB) = (a, b, gradA, gradB)
  }

  /// W + s·B·A (⊙ M when `masked`) into `out` (out, in).
  func mergedWeight(into out: UnsafeMutablePointer<Float>, masked: Bool) {
    let count = outFeatures * inFeatures
    out.update(from: weight, count: count)
    Gemm.sgemm(out, b, a, m: outFeatures, n: inFeatures, k: rank, alpha: scale, beta: 1)
    if masked { for k in 0..<count where weight[k] == 0 { out[k] = 0 } }
  }
}

public final class LoRALinear: LinearLayer {
  public let factors: LowRankFactors
  public var inFeatures: Int { factors.inFeatures }
  public var outFeatures: Int { factors.outFeatures }

  public init(
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, inFeatures: Int, outFeatures: Int, rank: Int, scale: Float,
    a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>, gradA: UnsafeMutablePointer<Float>, gradB: UnsafeMutablePointer<Float>
  ) {
    factors = LowRankFactors(
      weight: weight, bias: bias, inFeatures: inFeatures, outFeatures: outFeatures, rank: rank, scale: scale,
      a: a, b: b, gradA: gradA, gradB: gradB)
  }

  public func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    let (weight, bias, a, b, rank, scale) = (factors.weight, factors.bias, factors.a, factors.b, factors.rank, factors.scale)
    Gemm.sgemm(out, inp, weight, m: N, n: outFeatures, k: inFeatures, transB: true)
    let t = UnsafeMutablePointer<Float>.allocate(capacity: N * rank)
    defer { t.deallocate() }
    Gemm.sgemm(t, inp, a, m: N, n: rank, k: inFeatures, transB: true)  // x·Aᵀ (N, r)
    Gemm.sgemm(out, t, b, m: N, n: outFeatures, k: rank, transB: true, alpha: scale, beta: 1)
    if let bias { for n in 0..<N { accumulate(out + n * outFeatures, bias, count: outFeatures) } }
  }

  public func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    let (weight, a, b, gradA, gradB, scale) = (factors.weight, factors.a, factors.b, factors.gradA, factors.gradB, factors.scale)
    let (o, i, r) = (outFeatures, inFeatures, factors.rank)
    Gemm.sgemm(dinp, dout, weight, m: N, n: i, k: o, beta: 1)
    let t = UnsafeMutablePointer<Float>.allocate(capacity: N * r)
    defer { t.deallocate() }
    Gemm.sgemm(t, dout, b, m: N, n: r, k: o)  // dY·B (N, r)
    Gemm.sgemm(dinp, t, a, m: N, n: i, k: r, alpha: scale, beta: 1)  // += s·(dY·B)·A
    Gemm.sgemm(gradA, t, inp, m: r, n: i, k: N, transA: true, alpha: scale, beta: 1)  // s·(dY·B)ᵀ·X
    Gemm.sgemm(t, inp, a, m: N, n: r, k: i, transB: true)  // X·Aᵀ
    Gemm.sgemm(gradB, dout, t, m: o, n: r, k: N, transA: true, alpha: scale, beta: 1)  // s·dYᵀ·(X·Aᵀ)
  }
}

public final class SQFTLinear: LinearLayer {
  public let factors: LowRankFactors
  public var inFeatures: Int { factors.inFeatures }
  public var outFeatures: Int { factors.outFeatures }
  /// The merged weight and the mask, kept from forward for backward (as SQFT does): 5 bytes per weight.
  let merged: UnsafeMutablePointer<Float>
  let mask: UnsafeMutablePointer<Bool>

  public init(
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, inFeatures: Int, outFeatures: Int, rank: Int, scale: Float,
    a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>, gradA: UnsafeMutablePointer<Float>, gradB: UnsafeMutablePointer<Float>
  ) {
    factors = LowRankFactors(
      weight: weight, bias: bias, inFeatures: inFeatures, outFeatures: outFeatures, rank: rank, scale: scale,
      a: a, b: b, gradA: gradA, gradB: gradB)
    merged = .allocate(capacity: outFeatures * inFeatures)
    mask = .allocate(capacity: outFeatures * inFeatures)
    for k in 0..<(outFeatures * inFeatures) { mask[k] = weight[k] != 0 }
  }
  deinit {
    merged.deallocate()
    mask.deallocate()
  }

  public func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    let (weight, bias, a, b, rank, scale) = (factors.weight, factors.bias, factors.a, factors.b, factors.rank, factors.scale)
    let count = outFeatures * inFeatures
    merged.update(from: weight, count: count)
    Gemm.sgemm(merged, b, a, m: outFeatures, n: inFeatures, k: rank, alpha: scale, beta: 1)
    for k in 0..<count where !mask[k] { merged[k] = 0 }
    Gemm.sgemm(out, inp, merged, m: N, n: outFeatures, k: inFeatures, transB: true)
    if let bias { for n in 0..<N { accumulate(out + n * outFeatures, bias, count: outFeatures) } }
  }

  public func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    let (a, b, gradA, gradB, scale) = (factors.a, factors.b, factors.gradA, factors.gradB, factors.scale)
    let (o, i, r) = (outFeatures, inFeatures, factors.rank)
    Gemm.sgemm(dinp, dout, merged, m: N, n: i, k: o, beta: 1)
    let g = UnsafeMutablePointer<Float>.allocate(capacity: o * i)
    defer { g.deallocate() }
    Gemm.sgemm(g, dout, inp, m: o, n: i, k: N, transA: true)
    for k in 0..<(o * i) where !mask[k] { g[k] = 0 }
    Gemm.sgemm(gradB, g, a, m: o, n: r, k: i, transB: true, alpha: scale, beta: 1)  // s·(G⊙M)·Aᵀ
    Gemm.sgemm(gradA, b, g, m: r, n: i, k: o, transA: true, alpha: scale, beta: 1)  // s·Bᵀ·(G⊙M)
  }
}
