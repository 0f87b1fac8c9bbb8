// One process, or the ranks of an MPI job, behind one small interface: which rank this is, how work is
// shared, a fixed-order all-reduce and a broadcast. Everything expensive in Espalier is a sum over samples
// (calibration windows, training windows, scored windows), so each rank takes its share, and one
// collective per step makes the ranks agree.
//
// The all-reduce is our own, over MPI's point-to-point calls, because its order is part of the result:
// the values go along the chain 0 → 1 → … → N−1, each rank folding its own share into what arrives (in
// chunks, so the chain is a pipeline: time ≈ (S + (N−1)·chunk)/bandwidth), and rank N−1 broadcasts the
// result. So every rank ends with the same bits (MPI_Allreduce promises that only as advice), the order of
// the sum is the rank order whatever algorithm the MPI library would have picked, and a statistic that
// folds sequence by sequence can be folded across ranks exactly as one process folds it.

import Foundation

public final class Cluster: @unchecked Sendable {
  public let rank: Int
  public let size: Int
  let mpi: MPILibrary?
  /// Collective calls so far, the bytes they reduced or broadcast, and the seconds spent in them (waiting
  /// for the slowest rank included).
  public private(set) var collectives = 0
  public private(set) var collectiveBytes = 0
  public private(set) var collectiveSeconds = 0.0
  /// Bytes a chain hop carries at once (the pipeline's chunk).
  public var chunkBytes = 1 << 18

  /// One process: every collective is the identity.
  public static let single = Cluster(rank: 0, size: 1, mpi: nil)

  init(rank: Int, size: Int, mpi: MPILibrary?) {
    (self.rank, self.size, self.mpi) = (rank, size, mpi)
  }

  /// The ranks of the MPI job this process belongs to: loads the MPI library (`library`, else Open MPI's
  /// libmpi.so.40), initialises it and asks for the world communicator's rank and size.
  public static func mpi(library: String? = nil) throws(SurgeryError) -> Cluster {
    let mpi = try MPILibrary.load(library)
    let (rank, size) = try mpi.initialize()
    return Cluster(rank: rank, size: size, mpi: mpi)
  }

  public var isRoot: Bool { rank == 0 }
  public var isDistributed: Bool { mpi != nil }

  /// Ends the MPI job's use of the library (every rank calls it once, at the end).
  public func finish() {
    try? mpi?.finalize()
  }

  /// Ends every rank of the job with `code` (a rank that failed while the others wait in a collective).
  public func abort(code: Int32) -> Never {
    mpi?.abort(code: code)
    exit(code)
  }

  /// This rank's share of `count` items: contiguous, in order, sizes differing by at most one.
  public func share(of count: Int) -> Range<Int> { Cluster.share(of: count, rank: rank, size: size) }

  public static func share(of count: Int, rank: Int, size: Int) -> Range<Int> {
    (count * rank / size)..<(count * (rank + 1) / size)
  }

  /// This rank's share of `count` items taken in whole groups of `group` (the last group may be short):
  /// a batch is never split, so every batch is the same on one rank as on many.
  public func share(of count: Int, inGroupsOf group: Int) -> Range<Int> {
    let groups = (count + group - 1) / max(1, group)
    let g = share(of: groups)
    return min(count, g.lowerBound * group)..<min(count, g.upperBound * group)
  }

  /// The fixed-order all-reduce. `buffer` holds `count` values on every rank; `combine(incoming, range)`
  /// folds this rank's share into `buffer[range]`, `incoming` holding the fold of ranks 0..<rank over
  /// that range (nil on rank 0: nothing before it). After the chain, `buffer` holds the fold of every
  /// rank on every rank, or only on `destination` when one is given (the others then hold partial values).
  public func orderedReduce<T>(
    _ buffer: UnsafeMutablePointer<T>, count: Int, to destination: Int? = nil,
    combine: (_ incoming: UnsafePointer<T>?, _ range: Range<Int>) -> Void
  ) throws(SurgeryError) {
    guard let mpi, size > 1 else {
      combine(nil, 0..<count)
      return
    }
    let started = Date()
    defer { account(count * MemoryLayout<T>.stride, since: started) }
    let stride = MemoryLayout<T>.stride
    let chunk = max(1, chunkBytes / stride)
    let incoming = UnsafeMutablePointer<T>.allocate(capacity: min(chunk, max(1, count)))
    defer { incoming.deallocate() }
    var start = 0
    while start < count {
      let range = start..<min(start + chunk, count)
      if rank > 0 {
        try mpi.receive(incoming, bytes: range.count * stride, from: rank - 1)
        combine(incoming, range)
      } else {
        combine(nil, range)
      }
      if rank < size - 1 { try mpi.send(buffer + range.lowerBound, bytes: range.count * stride, to: rank + 1) }
      start = range.upperBound
    }
    let last = size - 1
    if let destination {
      guard destination != last else { return }
      if rank == last { try mpi.send(buffer, bytes: count * stride, to: destination) }
      if rank == destination { try mpi.receive(buffer, bytes: count * stride, from: last) }
    } else {
      try mpi.broadcast(buffer, bytes: count * stride, root: last)
    }
  }

  /// Sums `buffer` (Float or Double) over the ranks, in rank order, into every rank's `buffer` (or only
  /// `destination`'s).
  public func sum<T: BinaryFloatingPoint>(_ buffer: UnsafeMutablePointer<T>, count: Int, to destination: Int? = nil) throws(SurgeryError) {
    guard size > 1 else { return }
    try orderedReduce(buffer, count: count, to: destination) { incoming, range in
      guard let incoming else { return }
      for (k, i) in range.enumerated() { buffer[i] = incoming[k] + buffer[i] }
    }
  }

  /// Sums arrays of Double over the ranks (a convenience for small reports).
  public func sum(_ values: inout [Double]) throws(SurgeryError) {
    let n = values.count
    try values.withUnsafeMutableBufferPointer { (p) throws(SurgeryError) in try sum(p.baseAddress!, count: n) }
  }

  /// Copies `bytes` at `buffer` from `root` to every rank.
  public func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int, from root: Int) throws(SurgeryError) {
    guard let mpi, size > 1 else { return }
    let started = Date()
    defer { account(bytes, since: started) }
    try mpi.broadcast(buffer, bytes: bytes, root: root)
  }

  /// Every rank takes rank 0's `value` (a setting each rank's memory plan chose, which must be one).
  public func agree(_ value: inout Int) throws(SurgeryError) {
    guard size > 1 else { return }
    var v = Int64(value)
    try broadcast(&v, bytes: MemoryLayout<Int64>.stride, from: 0)
    value = Int(v)
  }

  /// The most items any rank's share holds: `count` items in groups of `group`.
  public func largestShare(of count: Int, inGroupsOf group: Int) -> Int {
    let groups = (count + group - 1) / max(1, group)
    return min(count, (groups + size - 1) / size * group)
  }

  /// Waits for every rank.
  public func barrier() throws(SurgeryError) {
    guard let mpi, size > 1 else { return }
    let started = Date()
    defer { account(0, since: started) }
    try mpi.barrier()
  }

  private func account(_ bytes: Int, since started: Date) {
    collectives += 1
    collectiveBytes += bytes
    collectiveSeconds += Date().timeIntervalSince(started)
  }
}
