// What Wanda and SparseGPT accumulate per linear layer from its calibration inputs, kept the way their
// references keep it: folding in a batch of b sequences scales the old values by n/(n+b) and adds the
// batch's term, computed with the new total n+b. Values (Double) and a per-batch scratch buffer are
// allocated once; the hot loops run over raw pointers, never over class-held arrays.

public class CalibrationStatistic {
  /// Input columns of the layer.
  public let columns: Int
  /// Sequences folded in so far.
  public private(set) var sequences = 0
  let count: Int
  private let buffer: UnsafeMutablePointer<Double>
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
}
