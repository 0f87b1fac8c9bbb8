// What Wanda and SparseGPT accumulate per linear layer from its calibration inputs. Wanda's is kept the way
// its reference keeps it: folding in a batch of b sequences scales the old values by n/(n+b) and adds the
// batch's term, computed with the new total n+b; the Hessian is a sum, scaled once at the end
// (HessianAccumulator says why). Values (Double) and a per-batch scratch buffer are allocated once; the
// hot loops run over raw pointers, never over class-held arrays.
//
// Under MPI each rank takes its own share of the windows (whole batches, in order), and `reduce` then
// gives the ranks the values one process would hold after all of them, to the bit: Wanda keeps each
// batch's column sums (a few KB) and folds them along the rank chain in the global batch order; the
// Hessian's sum of float terms is exact, so its rank-order sum is the one-process sum. `reduce` is
// called in one process too: it is where the Hessian is scaled.

public class CalibrationStatistic {
  /// Input columns of the layer.
  public let columns: Int
  /// Sequences folded in so far.
  public internal(set) var sequences = 0
  let count: Int
  let buffer: UnsafeMutablePointer<Double>
  /// Per-batch working space the subclass keeps between batches (Wanda's Σx²).
  let scratch: UnsafeMutableRawPointer

  init(columns: Int, values: Int, scratch bytes: Int) {
    self.columns = columns
    count = values
    buffer = .allocate(capacity: max(1, values))
    buffer.initialize(repeating: 0, count: max(1, values))
    scratch = .allocate(byteCount: max(8, bytes), alignment: 64)
  }

  deinit {
    buffer.deallocate()
    scratch.deallocate()
  }

  var values: [Double] { Array(UnsafeBufferPointer(start: buffer, count: count)) }

  /// The values in place, without a copy.
  func withValues<R, E: Error>(_ body: (UnsafeBufferPointer<Double>) throws(E) -> R) throws(E) -> R {
    try body(UnsafeBufferPointer(start: buffer, count: count))
  }

  /// v[k] ← v[k]·n/(n+b) + term(k, n+b).
  @inline(__always)
  final func fold(sequences b: Int, _ term: (_ k: Int, _ total: Double) -> Double) {
    let (v, total) = (buffer, Double(sequences + b))
    let decay = Double(sequences) / total
    for k in 0..<count { v[k] = v[k] * decay + term(k, total) }
    sequences += b
  }

  /// Gives the ranks of `cluster` the values of one process that folded all `total` sequences; `before`
  /// of them precede this rank's share. With a `destination`, only that rank receives them.
  func reduce(on cluster: Cluster, before: Int, total: Int, to destination: Int? = nil) throws(SurgeryError) {}
}
