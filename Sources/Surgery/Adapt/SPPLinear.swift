// SPP (Lucky-Lance/SPP; algorithms.md §5): a learned row-block × column scaling of the frozen weight,
// which keeps its zeros by construction (ΔW = 0 wherever W = 0):
//
//   W' = W ⊙ (1 + s·expand(A)·b),  i.e. W'_ij = W_ij · (1 + s · b_i · A_{k(i), j}),  k(i) = ⌊i / (out/16)⌋
//   y  = x·W'ᵀ (+ bias)                                 A: (16, in), b: (out, 1)
//
// Backward recomputes W' (nothing but x and the parameters is kept), dX = dY·W', and with the dense
// G = dYᵀ·X formed once in the shared workspace (as SPP's autograd does, one (out × in) buffer):
//   dA_kj = s · Σ_{i ∈ block k} G_ij · W_ij · b_i,      db_i = s · Σ_j G_ij · W_ij · A_{k(i), j}

public final class SPPLinear: RecomputedWeightLayer {
  /// SPP's row blocks (hard-coded in SPP, independent of the rank).
  public static let rowBlocks = 16
  public let inFeatures: Int
  public let outFeatures: Int
  public let scale: Float
  let weight: UnsafePointer<Float>
  let bias: UnsafePointer<Float>?
  public let a: UnsafeMutablePointer<Float>  // (16, in)
  public let b: UnsafeMutablePointer<Float>  // (out, 1)
  public let gradA: UnsafeMutablePointer<Float>
  public let gradB: UnsafeMutablePointer<Float>
  let workspace: AdapterWorkspace

  /// `outFeatures` must be a multiple of 16 (SPP's repeat_interleave requires it).
  public init(
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, inFeatures: Int, outFeatures: Int, scale: Float,
    a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>, gradA: UnsafeMutablePointer<Float>,
    gradB: UnsafeMutablePointer<Float>, workspace: AdapterWorkspace
  ) {
    precondition(outFeatures % Self.rowBlocks == 0, "SPP needs out features divisible by 16")
    (self.weight, self.bias, self.inFeatures, self.outFeatures, self.scale) = (weight, bias, inFeatures, outFeatures, scale)
    (self.a, self.b, self.gradA, self.gradB, self.workspace) = (a, b, gradA, gradB, workspace)
  }

  var rowsPerBlock: Int { outFeatures / Self.rowBlocks }

  /// W' = W ⊙ (1 + s·expand(A)·b) into `out` (out, in).
  public func mergedWeight(into out: UnsafeMutablePointer<Float>) {
    Self.merge(into: out, weight: weight, a: a, b: b, out: outFeatures, in: inFeatures, scale: scale)
  }

  /// W ⊙ (1 + s·expand(A)·b) for A (16, in), b (out); also merge's kernel.
  public static func merge(
    into dst: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
    out: Int, in n: Int, scale s: Float
  ) {
    let rowsPerBlock = out / rowBlocks
    for i in 0..<out {
      let row = weight + i * n, d = dst + i * n, blockRow = a + (i / rowsPerBlock) * n
      let sb = s * b[i]
      for j in 0..<n { d[j] = row[j] * (1 + sb * blockRow[j]) }
    }
  }

  public func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    let (o, n, s) = (outFeatures, inFeatures, scale)
    let buffer = workspace.pointer(o * n)
    mergedWeight(into: buffer)
    // dX (N, in) += dY (N, out) · W' (out, in)
    Gemm.sgemm(dinp, dout, buffer, m: N, n: n, k: o, beta: 1)
    // G (out, in) = dYᵀ · X, reusing the buffer.
    let g = buffer
    Gemm.sgemm(g, dout, inp, m: o, n: n, k: N, transA: true)
    for i in 0..<o {
      let gRow = g + i * n, wRow = weight + i * n
      let block = (i / rowsPerBlock) * n
      let aRow = a + block, daRow = gradA + block
      let sb = s * b[i]
      var db: Float = 0
      for j in 0..<n {
        let t = gRow[j] * wRow[j]
        daRow[j] += sb * t
        db += t * aRow[j]
      }
      gradB[i] += s * db
    }
  }
}
