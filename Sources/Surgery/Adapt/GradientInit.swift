// LoRS' gradient-SVD initialisation (algorithms.md §3.4, from LoRA-GA): the dense gradient G of every
// target weight is averaged over a few batches; B (r × in) takes the top-r right singular vectors of G
// (B = V_rᵀ / γ) and A = 0, so the model's output is unchanged at step 0 and the first update of A,
// dA = G·V_r = U_r·S_r, lies in G's best rank-r approximation. The SVD is Linalg's (LAPACK sgesdd).
// This file holds the exact form (dense G per target, `--init gradient-exact`); GradientSketch.swift the
// randomized one the reference actually computes, in adapter-sized memory (`--init gradient`).

import Formats

public enum GradientInit {
  /// The top `rank` right singular vectors of G (rows × cols, row-major), as a (rank, cols) matrix.
  public static func rightSingularVectors(_ g: [Float], rows: Int, cols: Int, rank: Int) throws(SurgeryError) -> [Float] {
    let k = min(rows, cols)
    let vt = try Linalg.svd(g, rows: rows, cols: cols).vt
    // Singular values come sorted descending; the first `rank` rows of Vᵀ are the top vectors.
    return Array(vt.prefix(min(rank, k) * cols)) + [Float](repeating: 0, count: max(0, rank - k) * cols)
  }

  /// Averages the dense gradient of every adapter target's weight over `batches` (inputs, targets of
  /// B·T tokens each) with the base model (adapters detached). Weights whose gradients together exceed
  /// `maxMemory` bytes are done in groups, one pass over the batches per group.
  public static func estimateGradients(
    model: LlamaModel, prefixes: [String], batches: [([Int32], [Int32])], B: Int, T: Int, maxMemory: Int,
    progress: ((Int, Int) -> Void)? = nil
  ) throws(SurgeryError) -> [String: [Float]] {
    var groups: [[String]] = [[]]
    var bytes = 0
    for prefix in prefixes {
      let size = model.params.layout.entry(prefix + ".weight")!.count * 4
      if bytes + size > maxMemory && !groups[groups.count - 1].isEmpty {
        groups.append([])
        bytes = 0
      }
      groups[groups.count - 1].append(prefix)
      bytes += size
    }
    let saved = model.linears
    defer { model.linears = saved }
    var result: [String: [Float]] = [:]
    let runner = LlamaRunner(model: model, B: B, T: T)
    var done = 0
    for group in groups {
      // Fresh dense layers with gradient buffers for this group's weights.
      var buffers: [String: UnsafeMutablePointer<Float>] = [:]
      defer { for p in buffers.values { p.deallocate() } }
      for prefix in group {
        let parts = prefix.split(separator: ".")
        guard let l = Int(parts[2]), let p = LlamaTensors.projections.firstIndex(of: parts[3...].joined(separator: ".")) else { continue }
        let entry = model.params.layout.entry(prefix + ".weight")!
        let grad = UnsafeMutablePointer<Float>.allocate(capacity: entry.count)
        grad.initialize(repeating: 0, count: entry.count)
        buffers[prefix] = grad
        let layer = DenseLinear(
          weight: model.weight(prefix + ".weight"), bias: model.params.pointer(prefix + ".bias").map { UnsafePointer($0) },
          inFeatures: entry.shape[1], outFeatures: entry.shape[0])
        layer.weightGrad = grad
        model.linears[l][p] = layer
      }
      for (tokens, targets) in batches {
        try runner.forward(tokens: tokens, targets: targets, prepareBackward: true)
        try runner.backward()
      }
      for (prefix, grad) in buffers {
        let count = model.params.layout.entry(prefix + ".weight")!.count
        let scale = 1 / Float(max(1, batches.count))
        result[prefix] = (0..<count).map { grad[$0] * scale }
      }
      model.linears = saved
      done += group.count
      progress?(done, prefixes.count)
    }
    return result
  }

  /// Sets the input-side factor (LoRS' B, PEFT's lora_A; r × in) to V_rᵀ / gamma and the other to zero,
  /// for every adapter from the averaged gradients. Not defined for SPP (no rank-r factor).
  public static func initialize(_ adapters: AdapterSet, model: LlamaModel, gradients: [String: [Float]], gamma: Float = 1) throws(SurgeryError) {
    var vectors: [String: [Float]] = [:]
    for prefix in adapters.prefixes {
      guard let g = gradients[prefix], let shape = model.params.layout.entry(prefix + ".weight")?.shape else { continue }
      vectors[prefix] = try rightSingularVectors(g, rows: shape[0], cols: shape[1], rank: adapters.rank)
    }
    try initialize(adapters, rightSingularVectors: vectors, gamma: gamma)
  }

  /// The same from the right singular vectors themselves ((rank, in) per prefix, e.g. sketched).
  public static func initialize(_ adapters: AdapterSet, rightSingularVectors vectors: [String: [Float]], gamma: Float = 1) throws(SurgeryError) {
    guard adapters.method != .spp else { throw .unsupported("gradient-SVD initialisation is defined for low-rank adapters, not spp") }
    adapters.params.zero()
    for prefix in adapters.prefixes {
      guard let v = vectors[prefix] else { continue }
      let b = adapters.params.pointer(prefix + adapters.inputSideName)!
      for i in 0..<v.count { b[i] = v[i] / gamma }
    }
  }
}
