// Wanda, magnitude and SparseGPT against the deterministic test vectors of algorithms.md §11.2-11.3
// (computed in float64 from the reference formulas), and the invariants of §11.6.

import Testing

@testable import Surgery

@Suite struct PruneTests {
  static let W: [Float] = [
    0.9, -0.2, 0.4, 1.1, -0.7, 0.3, -0.05, 0.6,
    -0.3, 0.8, -1.2, 0.1, 0.5, -0.9, 0.25, -0.4,
    0.15, 0.35, -0.6, -0.85, 1.3, 0.05, -0.45, 0.7,
    -1.0, 0.6, 0.2, -0.3, -0.1, 0.75, 0.55, -0.95,
  ]
  static let X1: [Float] = [
    1.0, 0.5, -2.0, 0.1, 0.3, -1.5, 2.5, 0.2,
    0.5, -0.5, 1.0, 0.2, -0.6, 1.0, -2.0, 0.1,
    -1.0, 1.5, 0.5, -0.3, 0.9, -0.5, 1.5, 0.4,
  ]
  static let X2: [Float] = [
    0.2, -1.0, 1.5, 0.4, -0.3, 2.0, -1.0, -0.2,
    1.5, 0.5, -0.5, -0.1, 0.6, 0.5, 0.5, 0.3,
    -0.5, 0.0, 1.0, 0.2, -0.9, -1.0, 2.0, -0.1,
  ]
  static let wandaMask: [Int] = [0, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1]

  static func statistics(scale: Float = 1) -> WandaStatistics {
    let s = WandaStatistics(columns: 8)
    s.add(X1.map { $0 * scale }, tokens: 3, sequences: 1)
    s.add(X2.map { $0 * scale }, tokens: 3, sequences: 1)
    return s
  }

  static func hessian(scale: Float = 1) -> [Double] {
    let h = HessianAccumulator(columns: 8)
    h.add(X1.map { $0 * scale }, tokens: 3, sequences: 1)
    h.add(X2.map { $0 * scale }, tokens: 3, sequences: 1)
    return h.h
  }

  @Test func wandaStatisticsAndScores() {
    let s = Self.statistics()
    let want = [2.395, 2.0, 4.375, 0.175, 1.26, 4.375, 8.875, 0.175]
    for j in 0..<8 { #expect(abs(s.scaler[j] - want[j]) < 1e-6) }
    let scores = Wanda.scores(Self.W, rows: 4, cols: 8, statistics: s)
    let row0: [Float] = [1.392821, 0.282843, 0.836660, 0.460163, 0.785748, 0.627495, 0.148955, 0.250998]
    for j in 0..<8 { #expect(abs(scores[j] - row0[j]) < 1e-5) }
  }

  @Test(arguments: [SparsityTarget.unstructured(0.5), .nm(try! NMPattern(n: 2, m: 4))])
  func wandaMasks(target: SparsityTarget) {
    let mask = Wanda.mask(Self.W, rows: 4, cols: 8, statistics: Self.statistics(), target: target)
    #expect(mask.map { $0 ? 1 : 0 } == Self.wandaMask)
    // Scaling every activation leaves the mask unchanged.
    #expect(Wanda.mask(Self.W, rows: 4, cols: 8, statistics: Self.statistics(scale: 3.5), target: target) == mask)
  }

  @Test func magnitudeMasks() {
    let nm = Magnitude.mask(Self.W, rows: 4, cols: 8, target: .nm(try! NMPattern(n: 2, m: 4)))
    #expect(nm.map { $0 ? 1 : 0 } == [0, 1, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0])
    // One threshold per tensor: sort(|W|)[16] and everything <= it.
    let unstructured = Magnitude.mask(Self.W, rows: 4, cols: 8, target: .unstructured(0.5))
    let threshold = Self.W.map(abs).sorted()[16]
    #expect(unstructured == Self.W.map { abs($0) <= threshold })
  }

  static func sparsegpt(_ target: SparsityTarget, blockSize: Int = 128, scale: Float = 1) throws -> ([Float], SparseGPTResult) {
    var w = W
    let result = try SparseGPT.prune(&w, rows: 4, cols: 8, hessian: hessian(scale: scale), target: target, blockSize: blockSize)
    return (w, result)
  }

  static func expectClose(_ got: [Float], _ want: [Float], tolerance: Float = 2e-5) {
    #expect(got.count == want.count)
    for i in got.indices {
      #expect((got[i] == 0) == (want[i] == 0), "mask differs at \(i)")
      #expect(abs(got[i] - want[i]) <= tolerance * max(1, abs(want[i])), "value \(i): \(got[i]) vs \(want[i])")
    }
  }

  @Test func sparseGPTUnstructuredOneBlock() throws {
    let (w, result) = try Self.sparsegpt(.unstructured(0.5))
    Self.expectClose(w, [
      0.9, 0, 0.35013, 0, -1.158962, 0.561001, 0, 0,
      0, 0, -0.702906, 0, 1.390986, -1.54903, 0.186022, 0,
      0, 0, -0.661535, 0, 1.634257, 0, -0.436555, 0,
      -1.0, 0, 0, 0, 0, 0.732546, 0.60887, 0.009694,
    ])
    #expect(w.filter { $0 == 0 }.count == 17)
    for (got, want) in zip(result.rowLoss, [0.158798, 0.078192, 0.469857, 0.349868]) { #expect(abs(got - want) < 1e-5) }
  }

  @Test func sparseGPTUnstructuredTwoBlocks() throws {
    let (w, _) = try Self.sparsegpt(.unstructured(0.5), blockSize: 4)
    Self.expectClose(w, [
      0.9, 0, 0.35013, 1.187386, -0.822795, 0, 0, 0,
      0, 0.668099, -0.869496, 0, 0.898144, -1.266181, 0, 0,
      0, 0, -0.661535, 0, 1.634257, 0, -0.436555, 0,
      -1.0, 0, 0, 0, 0, 0.732546, 0.60887, 0,
    ])
  }

  @Test func sparseGPTTwoFour() throws {
    let (w, _) = try Self.sparsegpt(.nm(try NMPattern(n: 2, m: 4)))
    Self.expectClose(w, [
      0.9, 0, 0.35013, 0, -1.158962, 0.561001, 0, 0,
      0, 0.668099, -0.869496, 0, 0.898144, -1.266181, 0, 0,
      0, 0, -0.661535, -1.031113, 1.342334, 0, -0.437773, 0,
      -1.0, 0, 0.349609, 0, 0, 0.480321, 0.561572, 0,
    ])
    // H-scale invariance.
    let (scaled, _) = try Self.sparsegpt(.nm(try NMPattern(n: 2, m: 4)), scale: 4)
    Self.expectClose(scaled, w)
  }

  @Test func deadColumnsAreZeroedBySparseGPTAndPrunedFirstByWanda() throws {
    var x = Self.X1 + Self.X2
    for t in 0..<6 { x[t * 8 + 3] = 0 }
    let h = HessianAccumulator(columns: 8)
    h.add(x, tokens: 6, sequences: 2)
    var w = Self.W
    let result = try SparseGPT.prune(&w, rows: 4, cols: 8, hessian: h.h, target: .unstructured(0.25))
    #expect(result.deadColumns == 1)
    for r in 0..<4 { #expect(w[r * 8 + 3] == 0) }
    let s = WandaStatistics(columns: 8)
    s.add(x, tokens: 6, sequences: 2)
    let mask = Wanda.mask(Self.W, rows: 4, cols: 8, statistics: s, target: .unstructured(0.125))
    for r in 0..<4 { #expect(mask[r * 8 + 3]) }
  }

  @Test func invariantsOnRandomShapes() throws {
    var r = Random(11)
    let (rows, cols) = (16, 40)
    let w = r.array(rows * cols)
    let stats = WandaStatistics(columns: cols)
    stats.add(r.array(7 * cols), tokens: 7, sequences: 1)
    let unstructured = Wanda.mask(w, rows: rows, cols: cols, statistics: stats, target: .unstructured(0.3))
    for row in 0..<rows { #expect(unstructured[(row * cols)..<((row + 1) * cols)].filter { $0 }.count == 12) }
    let nm = Wanda.mask(w, rows: rows, cols: cols, statistics: stats, target: .nm(try NMPattern(n: 4, m: 8)))
    for g in stride(from: 0, to: rows * cols, by: 8) { #expect(nm[g..<(g + 8)].filter { $0 }.count == 4) }
  }
}
