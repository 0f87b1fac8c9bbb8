// LoSA's layer importance (the reference's "RMI"; algorithms.md §6): how much a layer's input
// representation resembles every other layer's, by linear CKA over calibration windows (Kornblith et al.
// 2019, the reference's CKA/cka.py):
//
//   X_l      (n, T·H): the input of block l for n windows, each window's whole sequence flattened
//   G_l      = X_l·X_lᵀ (n × n)
//   Gc       = G − m·1ᵀ − 1·mᵀ with m = colmean(G) − mean(G)/2   (double centring, the biased estimator)
//   CKA(l,j) = ⟨Gc_l, Gc_j⟩_F / (‖Gc_l‖_F·‖Gc_j‖_F)
//   sim_l    = Σ_{j≠l} CKA(l, j);  imp_l = exp(−β·sim_l / Σ_k sim_k)
//
// A layer much like the others is redundant (low importance) and takes more sparsity. Only the n × n grams
// are kept, so the sweep holds no more than the calibration states a pruning sweep holds.

import Formats
import Foundation

public struct LayerImportance: Sendable {
  /// cka[l][j], symmetric, 1 on the diagonal.
  public var cka: [[Double]]
  public var similarity: [Double]
  public var importance: [Double]

  /// From the grams of the L layers' inputs (each n × n, row-major).
  public init(grams: [[Double]], n: Int, beta: Double = 1) {
    let centred = grams.map { Self.centre($0, n: n) }
    let norms = centred.map { g in g.reduce(0) { $0 + $1 * $1 }.squareRoot() }
    let L = grams.count
    var cka = [[Double]](repeating: [Double](repeating: 0, count: L), count: L)
    for l in 0..<L {
      for j in l..<L {
        var dot = 0.0
        for k in 0..<(n * n) { dot += centred[l][k] * centred[j][k] }
        let value = dot / (norms[l] * norms[j])
        (cka[l][j], cka[j][l]) = (value, value)
      }
    }
    let similarity = (0..<L).map { l in (0..<L).reduce(0.0) { $1 == l ? $0 : $0 + cka[l][$1] } }
    let total = similarity.reduce(0, +)
    self.cka = cka
    self.similarity = similarity
    importance = similarity.map { Foundation.exp(-beta * $0 / total) }
  }

  /// G − m·1ᵀ − 1·mᵀ, m_j = mean_i G_ij − mean(G)/2.
  static func centre(_ g: [Double], n: Int) -> [Double] {
    var means = [Double](repeating: 0, count: n)
    for i in 0..<n { for j in 0..<n { means[j] += g[i * n + j] } }
    for j in 0..<n { means[j] /= Double(n) }
    let half = means.reduce(0, +) / Double(n) / 2
    for j in 0..<n { means[j] -= half }
    var c = g
    for i in 0..<n { for j in 0..<n { c[i * n + j] -= means[i] + means[j] } }
    return c
  }

  /// The grams of every block's input for `windows` (equal lengths) run through `model` as it is now
  /// (attached adapters included), block by block.
  public static func grams(
    _ model: LlamaModel, windows: [[Int32]], batch: Int, maxMemory: Int, temporaryDirectory: String,
    progress: ((Int, Int) -> Void)? = nil
  ) throws(SurgeryError) -> [[Double]] {
    guard let first = windows.first, windows.allSatisfy({ $0.count == first.count }) else {
      throw .calibrationWindows(windows.isEmpty ? "none given" : "they differ in length")
    }
    let n = windows.count, width = first.count * model.config.hiddenSize
    let sweep = try LayerSweep(
      model: model, sequences: windows, batch: max(1, min(batch, n)), maxMemory: maxMemory, temporaryDirectory: temporaryDirectory)
    try sweep.embed()
    let g = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
    defer { g.deallocate() }
    var grams: [[Double]] = []
    let L = model.config.layers
    for l in 0..<L {
      // The windows' states are consecutive rows of width T·H: G = X·Xᵀ.
      Gemm.sgemm(g, sweep.hidden.base, sweep.hidden.base, m: n, n: n, k: width, transB: true)
      grams.append((0..<(n * n)).map { Double(g[$0]) })
      if l + 1 < L { try sweep.run(block: l, advance: true) }
      progress?(l + 1, L)
    }
    return grams
  }
}
