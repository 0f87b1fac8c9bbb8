// The Cluster's arithmetic that does not need MPI: shares cover the items once, in order, in whole
// groups; in one process every collective is the identity and the ordered reduce folds once over all.
// (The multi-process behaviour is tested by running the tools under mpirun: ToolsTests/MPIToolTests.)

import Testing

@testable import Surgery

@Suite struct ClusterTests {
  @Test(arguments: [(10, 1), (10, 3), (7, 2), (3, 5), (128, 64)])
  func sharesCoverEveryItemOnceInOrder(count: Int, size: Int) {
    let shares = (0..<size).map { Cluster.share(of: count, rank: $0, size: size) }
    #expect(shares.first?.lowerBound == 0 && shares.last?.upperBound == count)
    for (a, b) in zip(shares, shares.dropFirst()) { #expect(a.upperBound == b.lowerBound) }
    #expect(shares.map(\.count).max()! - shares.map(\.count).min()! <= 1)
  }

  @Test(arguments: [(8, 2, 2), (9, 4, 2), (9, 1, 3), (16, 4, 3)])
  func groupedSharesNeverSplitABatch(count: Int, group: Int, size: Int) {
    let shares = (0..<size).map { rank in
      let c = Cluster(rank: rank, size: size, mpi: nil)
      return c.share(of: count, inGroupsOf: group)
    }
    #expect(shares.first?.lowerBound == 0 && shares.last?.upperBound == count)
    for s in shares { #expect(s.lowerBound % group == 0) }
    for (a, b) in zip(shares, shares.dropFirst()) { #expect(a.upperBound == b.lowerBound) }
  }

  @Test func oneProcessCollectivesAreTheIdentity() throws {
    let cluster = Cluster.single
    var values: [Double] = [1.5, -2, 3]
    try cluster.sum(&values)
    #expect(values == [1.5, -2, 3])
    var calls: [Range<Int>] = []
    try values.withUnsafeMutableBufferPointer { (p) throws(SurgeryError) in
      try cluster.orderedReduce(p.baseAddress!, count: 3) { incoming, range in
        #expect(incoming == nil)
        calls.append(range)
      }
    }
    #expect(calls == [0..<3])
    #expect(cluster.collectives == 0 && !cluster.isDistributed && cluster.isRoot)
  }

  /// The Hessian is a sum of float terms, scaled once: grouping the batches otherwise (as ranks do)
  /// leaves its bits unchanged, where a running mean would not.
  @Test func hessianDoesNotDependOnHowBatchesAreGrouped() {
    var random = SplitMix64(seed: 7)
    let x = (0..<(12 * 16)).map { _ in Float(Int(random.next() % 2001) - 1000) / 377 }
    let whole = HessianAccumulator(columns: 16)
    for b in 0..<6 { x.withUnsafeBufferPointer { whole.add($0.baseAddress! + b * 2 * 16, tokens: 2, sequences: 1) } }
    // Two "ranks": batches 0..<2 and 2..<6, their raw sums added in rank order, then scaled.
    let first = HessianAccumulator(columns: 16), second = HessianAccumulator(columns: 16)
    for b in 0..<2 { x.withUnsafeBufferPointer { first.add($0.baseAddress! + b * 2 * 16, tokens: 2, sequences: 1) } }
    for b in 2..<6 { x.withUnsafeBufferPointer { second.add($0.baseAddress! + b * 2 * 16, tokens: 2, sequences: 1) } }
    for k in 0..<(16 * 16) { first.buffer[k] += second.buffer[k] }
    first.sequences += second.sequences
    #expect(first.h == whole.h)
    #expect(whole.h[0] > 0)
  }
}
