// The gradient-SVD initialisation in adapter-sized memory and one pass. The reference takes the top-r
// right singular vectors of each target's averaged dense gradient G (out × in) with torch's
// svd_lowrank, a randomized range finder. G = Σₜ dyₜ·xₜᵀ is a sum of rank-one terms over tokens, so any
// linear sketch of it can be folded in per batch from what backward already has, without forming G.
// We take the two-sided single-pass sketch (Tropp, Yurtsever, Udell & Cevher 2017, "Practical sketching
// algorithms for low-rank matrix approximation", §4), which needs one pass where a range finder needs two:
//   Y = G·Ω   += dYᵀ·(X·Ω)      (out × k)      Ω: in × k
//   W = Ψ·G   += (dY·Ψᵀ)ᵀ·X     (l × in)       Ψ: l × out
// then Q = orth(Y), X̂ = (Ψ·Q)⁺·W (k × in), G ≈ Q·X̂, and the right singular vectors of X̂ are those of the
// approximation. k = min(4r, out, in) as the reference's q, l = 2k + 1 (Tropp et al.'s choice). Ω and Ψ
// are random signs regenerated from a seed on every batch, so only Y and W are held: k·out + l·in floats
// per target instead of out·in. When k covers out or in the result is exact.

import Formats
import Foundation

/// A frozen projection that, in backward, also folds its weight's gradient into a two-sided sketch.
final class SketchingLinear: LinearLayer {
  let base: LinearLayer
  let k: Int
  let l: Int
  let seed: UInt64
  var y: [Float]
  var w: [Float]
  var inFeatures: Int { base.inFeatures }
  var outFeatures: Int { base.outFeatures }

  init(_ base: LinearLayer, rank: Int, seed: UInt64) {
    self.base = base
    k = max(1, min(4 * rank, base.outFeatures, base.inFeatures))
    l = 2 * k + 1
    self.seed = seed
    y = [Float](repeating: 0, count: base.outFeatures * k)
    w = [Float](repeating: 0, count: l * base.inFeatures)
  }

  /// Ω (in × k) and Ψ (l × out) as ±1, the same on every call.
  func omega(into p: UnsafeMutablePointer<Float>) { Self.signs(into: p, count: inFeatures * k, seed: seed) }
  func psi(into p: UnsafeMutablePointer<Float>) { Self.signs(into: p, count: l * outFeatures, seed: seed ^ 0x5851_F42D_4C95_7F2D) }

  static func signs(into p: UnsafeMutablePointer<Float>, count: Int, seed: UInt64) {
    var random = SplitMix64(seed: seed)
    var i = 0
    while i < count {
      let bits = random.next()
      for j in 0..<min(64, count - i) { p[i + j] = (bits >> UInt64(j)) & 1 == 1 ? 1 : -1 }
      i += 64
    }
  }

  func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, N: Int) { base.forward(out: out, inp: inp, N: N) }

  func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    base.backward(dinp: dinp, dout: dout, inp: inp, N: N)
    let (o, i) = (outFeatures, inFeatures)
    let test = UnsafeMutablePointer<Float>.allocate(capacity: max(i * k, l * o))
    let t = UnsafeMutablePointer<Float>.allocate(capacity: N * l)
    defer { test.deallocate(); t.deallocate() }
    // Y (out, k) += dYᵀ · (X·Ω)
    omega(into: test)
    Gemm.sgemm(t, inp, test, m: N, n: k, k: i)
    y.withUnsafeMutableBufferPointer { Gemm.sgemm($0.baseAddress!, dout, t, m: o, n: k, k: N, transA: true, beta: 1) }
    // W (l, in) += (dY·Ψᵀ)ᵀ · X
    psi(into: test)
    Gemm.sgemm(t, dout, test, m: N, n: l, k: o, transB: true)
    w.withUnsafeMutableBufferPointer { Gemm.sgemm($0.baseAddress!, t, inp, m: l, n: i, k: N, transA: true, beta: 1) }
  }

  /// The top `rank` right singular vectors of G ≈ Q·(Ψ·Q)⁺·W, as a (rank, in) matrix (zero rows past k).
  func rightSingularVectors(rank: Int) throws(SurgeryError) -> [Float] {
    let (o, i) = (outFeatures, inFeatures)
    let q = try Linalg.svd(y, rows: o, cols: k).u  // (out, k): orthonormal basis of range(Y)
    // Ψ·Q (l, k), and its pseudo-inverse through its SVD: (ΨQ)⁺ = V·S⁻¹·Uᵀ.
    var psiQ = [Float](repeating: 0, count: l * k)
    let psi = UnsafeMutablePointer<Float>.allocate(capacity: l * o)
    defer { psi.deallocate() }
    self.psi(into: psi)
    q.withUnsafeBufferPointer { qp in psiQ.withUnsafeMutableBufferPointer { Gemm.sgemm($0.baseAddress!, psi, qp.baseAddress!, m: l, n: k, k: o) } }
    let (u, s, vt) = try Linalg.svd(psiQ, rows: l, cols: k)
    // X̂ (k, in) = V · S⁻¹ · (Uᵀ·W); directions with σ below 1e-6·σ_max are dropped.
    var utw = [Float](repeating: 0, count: k * i)
    u.withUnsafeBufferPointer { up in w.withUnsafeBufferPointer { wp in utw.withUnsafeMutableBufferPointer {
      Gemm.sgemm($0.baseAddress!, up.baseAddress!, wp.baseAddress!, m: k, n: i, k: l, transA: true)
    } } }
    let floor = (s.first ?? 0) * 1e-6
    for r in 0..<k {
      let inverse: Float = s[r] > floor ? 1 / s[r] : 0
      for c in 0..<i { utw[r * i + c] *= inverse }
    }
    var x = [Float](repeating: 0, count: k * i)
    vt.withUnsafeBufferPointer { vp in utw.withUnsafeBufferPointer { up in x.withUnsafeMutableBufferPointer {
      Gemm.sgemm($0.baseAddress!, vp.baseAddress!, up.baseAddress!, m: k, n: i, k: k, transA: true)
    } } }
    let top = try Linalg.svd(x, rows: k, cols: i).vt
    let kept = min(rank, k)
    return Array(top.prefix(kept * i)) + [Float](repeating: 0, count: (rank - kept) * i)
  }
}

extension GradientInit {
  /// The sketched init: for every prefix, the top `rank` right singular vectors of its averaged dense
  /// gradient over `batches`, in one forward and backward pass. The signs are seeded by `seed` and the prefix.
  public static func sketchedRightSingularVectors(
    model: LlamaModel, prefixes: [String], batches: [([Int32], [Int32])], B: Int, T: Int, rank: Int, seed: UInt64 = 0,
    recomputedLayers: Int = 0, cluster: Cluster = .single, progress: ((Int, Int) -> Void)? = nil
  ) throws(SurgeryError) -> [String: [Float]] {
    let saved = model.linears
    defer { model.linears = saved }
    var layers: [(String, SketchingLinear)] = []
    for (index, prefix) in prefixes.enumerated() {
      let (l, p) = AdapterSet.position(of: prefix)
      var mixer = SplitMix64(seed: seed ^ (UInt64(index + 1) &* 0xD1B5_4A32_D192_ED03))
      let layer = SketchingLinear(saved[l][p], rank: rank, seed: mixer.next())
      model.linears[l][p] = layer
      layers.append((prefix, layer))
    }
    let runner = LlamaRunner(model: model, B: B, T: T, recomputedLayers: recomputedLayers)
    // Under MPI each rank sketches its share of the batches; the sketches are linear in G, so their sum
    // over the ranks (one all-reduce of every Y and W) is the sketch of all batches.
    let mine = cluster.share(of: batches.count)
    for (done, (tokens, targets)) in batches[mine].enumerated() {
      try runner.forward(tokens: tokens, targets: targets, prepareBackward: true)
      try runner.backward()
      progress?(done + 1, mine.count + 1)
    }
    if cluster.size > 1 {
      var all = layers.flatMap { $0.1.y + $0.1.w }
      try all.withUnsafeMutableBufferPointer { (p) throws(SurgeryError) in try cluster.sum(p.baseAddress!, count: p.count) }
      var offset = 0
      for (_, layer) in layers {
        layer.y = Array(all[offset..<(offset + layer.y.count)])
        offset += layer.y.count
        layer.w = Array(all[offset..<(offset + layer.w.count)])
        offset += layer.w.count
      }
    }
    var result: [String: [Float]] = [:]
    for (prefix, layer) in layers { result[prefix] = try layer.rightSingularVectors(rank: rank) }
    progress?(mine.count + 1, mine.count + 1)
    return result
  }

  /// Bytes the sketches of targets with these (out, in) shapes hold.
  public static func sketchBytes(_ shapes: [(out: Int, inp: Int)], rank: Int) -> Int {
    shapes.reduce(0) { total, p in
      let k = max(1, min(4 * rank, p.out, p.inp))
      return total + (k * p.out + (2 * k + 1) * p.inp) * 4
    }
  }
}
