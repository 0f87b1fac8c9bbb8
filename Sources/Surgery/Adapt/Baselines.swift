// The baselines LoRS is compared with (algorithms.md §3.6, §4), as LinearLayers. PEFT naming here:
// A = lora_A (r, in), B = lora_B (out, r), ΔW = s·B·A.
//
//   LoRA:  y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ — dense: merging it fills the zeros of a sparse W.
//   SQFT:  y = x·(W + s·(B·A) ⊙ M)ᵀ with the merged weight and the mask KEPT from forward to backward (the
//          memory cost LoRS removes); exact gradients dB = s·(G ⊙ M)·Aᵀ, dA = s·Bᵀ·(G ⊙ M), G = dYᵀ·X.

public final class LoRALinear: LinearLayer {
  public let factors: LowRankFactors
  public var dropout = AdapterDropout(probability: 0)
  public var inFeatures: Int { factors.inFeatures }
  public var outFeatures: Int { factors.outFeatures }

  /// `factors` in PEFT's naming: a = lora_A (r, in), b = lora_B (out, r).
  public init(_ factors: LowRankFactors) {
    self.factors = factors
  }

  public func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    let (weight, bias, a, b, rank, scale) = (factors.weight, factors.bias, factors.a, factors.b, factors.rank, factors.scale)
    Gemm.sgemm(out, inp, weight, m: N, n: outFeatures, k: inFeatures, transB: true)
    withBranchInput(inp, N: N) { x in
      let t = UnsafeMutablePointer<Float>.allocate(capacity: N * rank)
      defer { t.deallocate() }
      Gemm.sgemm(t, x, a, m: N, n: rank, k: inFeatures, transB: true)  // x'·Aᵀ (N, r)
      Gemm.sgemm(out, t, b, m: N, n: outFeatures, k: rank, transB: true, alpha: scale, beta: 1)
    }
    if let bias { for n in 0..<N { accumulate(out + n * outFeatures, bias, count: outFeatures) } }
  }

  public func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    let (weight, a, b, gradA, gradB, scale) = (factors.weight, factors.a, factors.b, factors.gradA, factors.gradB, factors.scale)
    let (o, i, r) = (outFeatures, inFeatures, factors.rank)
    Gemm.sgemm(dinp, dout, weight, m: N, n: i, k: o, beta: 1)
    withBranchInput(inp, N: N) { x in
      let t = UnsafeMutablePointer<Float>.allocate(capacity: N * r)
      defer { t.deallocate() }
      Gemm.sgemm(t, dout, b, m: N, n: r, k: o)  // dY·B (N, r)
      Gemm.sgemm(gradA, t, x, m: r, n: i, k: N, transA: true, alpha: scale, beta: 1)  // s·(dY·B)ᵀ·x'
      if dropout.isActive {
        // d x' = s·(dY·B)·A, then through the same keep mask and 1/(1−p).
        let dx = UnsafeMutablePointer<Float>.allocate(capacity: N * i)
        defer { dx.deallocate() }
        Gemm.sgemm(dx, t, a, m: N, n: i, k: r, alpha: scale)
        dropout.accumulateBackward(dx, into: dinp, count: N * i)
      } else {
        Gemm.sgemm(dinp, t, a, m: N, n: i, k: r, alpha: scale, beta: 1)  // += s·(dY·B)·A
      }
      Gemm.sgemm(t, x, a, m: N, n: r, k: i, transB: true)  // x'·Aᵀ
      Gemm.sgemm(gradB, dout, t, m: o, n: r, k: N, transA: true, alpha: scale, beta: 1)  // s·dYᵀ·(x'·Aᵀ)
    }
  }

  /// Runs `body` on the adapter branch's input: x itself, or drop(x) regenerated from the dropout seed.
  func withBranchInput(_ inp: UnsafePointer<Float>, N: Int, _ body: (UnsafePointer<Float>) -> Void) {
    guard dropout.isActive else { return body(inp) }
    let x = UnsafeMutablePointer<Float>.allocate(capacity: N * inFeatures)
    defer { x.deallocate() }
    dropout.apply(inp, into: x, count: N * inFeatures)
    body(x)
  }
}

public final class SQFTLinear: LinearLayer {
  public let factors: LowRankFactors
  public var dropout = AdapterDropout(probability: 0)
  public var inFeatures: Int { factors.inFeatures }
  public var outFeatures: Int { factors.outFeatures }
  /// The merged weight W + D (or, with dropout, the masked delta D = s·(B·A) ⊙ M alone) and the mask,
  /// kept from forward for backward (as SQFT does): 5 bytes per weight.
  let merged: UnsafeMutablePointer<Float>
  let mask: UnsafeMutablePointer<Bool>

  /// `factors` in PEFT's naming: a = lora_A (r, in), b = lora_B (out, r).
  public init(_ factors: LowRankFactors) {
    self.factors = factors
    let (weight, count) = (factors.weight, factors.outFeatures * factors.inFeatures)
    merged = .allocate(capacity: count)
    mask = .allocate(capacity: count)
    for k in 0..<count { mask[k] = weight[k] != 0 }
  }
  deinit {
    merged.deallocate()
    mask.deallocate()
  }

  public func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    let (weight, bias, a, b, rank, scale) = (factors.weight, factors.bias, factors.a, factors.b, factors.rank, factors.scale)
    let count = outFeatures * inFeatures
    if dropout.isActive {
      // y = x·Wᵀ + drop(x)·Dᵀ
      Gemm.sgemm(merged, b, a, m: outFeatures, n: inFeatures, k: rank, alpha: scale)
      for k in 0..<count where !mask[k] { merged[k] = 0 }
      Gemm.sgemm(out, inp, weight, m: N, n: outFeatures, k: inFeatures, transB: true)
      let x = UnsafeMutablePointer<Float>.allocate(capacity: N * inFeatures)
      defer { x.deallocate() }
      dropout.apply(inp, into: x, count: N * inFeatures)
      Gemm.sgemm(out, x, merged, m: N, n: outFeatures, k: inFeatures, transB: true, beta: 1)
    } else {
      merged.update(from: weight, count: count)
      Gemm.sgemm(merged, b, a, m: outFeatures, n: inFeatures, k: rank, alpha: scale, beta: 1)
      for k in 0..<count where !mask[k] { merged[k] = 0 }
      Gemm.sgemm(out, inp, merged, m: N, n: outFeatures, k: inFeatures, transB: true)
    }
    if let bias { for n in 0..<N { accumulate(out + n * outFeatures, bias, count: outFeatures) } }
  }

  public func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    let (a, b, gradA, gradB, scale) = (factors.a, factors.b, factors.gradA, factors.gradB, factors.scale)
    let (o, i, r) = (outFeatures, inFeatures, factors.rank)
    var x = inp
    var dropped: UnsafeMutablePointer<Float>?
    defer { dropped?.deallocate() }
    if dropout.isActive {
      // dX = dY·W + keep ⊙ (dY·D) / (1 − p); the branch saw x' = drop(x).
      Gemm.sgemm(dinp, dout, factors.weight, m: N, n: i, k: o, beta: 1)
      let d = UnsafeMutablePointer<Float>.allocate(capacity: N * i)
      defer { d.deallocate() }
      Gemm.sgemm(d, dout, merged, m: N, n: i, k: o)
      dropout.accumulateBackward(d, into: dinp, count: N * i)
      let buffer = UnsafeMutablePointer<Float>.allocate(capacity: N * i)
      dropout.apply(inp, into: buffer, count: N * i)
      dropped = buffer
      x = UnsafePointer(buffer)
    } else {
      Gemm.sgemm(dinp, dout, merged, m: N, n: i, k: o, beta: 1)
    }
    let g = UnsafeMutablePointer<Float>.allocate(capacity: o * i)
    defer { g.deallocate() }
    Gemm.sgemm(g, dout, x, m: o, n: i, k: N, transA: true)
    for k in 0..<(o * i) where !mask[k] { g[k] = 0 }
    Gemm.sgemm(gradB, g, a, m: o, n: r, k: i, transB: true, alpha: scale, beta: 1)  // s·(G⊙M)·Aᵀ
    Gemm.sgemm(gradA, b, g, m: r, n: i, k: o, transA: true, alpha: scale, beta: 1)  // s·Bᵀ·(G⊙M)
  }
}
