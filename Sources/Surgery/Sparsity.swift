// Sparsity of stored weights: exact zeros and N:M conformance, counted on the stored bits so no
// conversion is needed (a float is zero when every bit but the sign is clear, so -0.0 counts as zero).
//
// N:M follows the pruning references (Wanda's prune_n/prune_m): N is the number of zeros required in
// every group of M consecutive elements along the input (last) dimension, so "2:4" means at least two
// zeros in each group of four. Leading dimensions are flattened into rows.

import Formats

public struct NMPattern: Equatable, Sendable, CustomStringConvertible {
  public let n: Int
  public let m: Int

  public init(n: Int, m: Int) throws(SurgeryError) {
    guard m >= 1, n >= 0, n <= m else { throw .invalidPattern("\(n):\(m)") }
    self.n = n
    self.m = m
  }

  /// Parses "2:4".
  public init(parsing text: String) throws(SurgeryError) {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    guard parts.count == 2, let n = Int(parts[0]), let m = Int(parts[1]) else { throw .invalidPattern(text) }
    try self.init(n: n, m: m)
  }

  public var description: String { "\(n):\(m)" }
}

public struct SparsityStats: Equatable, Sendable {
  public var elements: Int
  public var zeros: Int
  public var ratio: Double { elements == 0 ? 0 : Double(zeros) / Double(elements) }
}

public struct PatternStats: Equatable, Sendable {
  public var pattern: NMPattern
  /// Groups checked (rows × cols/M); 0 when the last dimension is not a multiple of M.
  public var groups: Int
  /// Groups with fewer than N zeros.
  public var violations: Int
  /// Whether the last dimension divides into groups of M at all.
  public var shapeFits: Bool
  public var conforms: Bool { shapeFits && violations == 0 }
}

public enum Sparsity {
  /// Counts exact zeros. Nil for dtypes whose zero cannot be read bit by bit here (sub-byte, complex).
  public static func count(_ tensor: Tensor) -> SparsityStats? {
    guard let isZero = zeroTest(tensor.dtype) else { return nil }
    let n = tensor.elementCount
    var zeros = 0
    isZero(tensor.bytes, 0..<n, &zeros)
    return SparsityStats(elements: n, zeros: zeros)
  }

  /// Checks every group of M along the last dimension for at least N zeros.
  /// Nil for tensors of rank < 2 or dtypes without a bit-level zero test.
  public static func check(_ tensor: Tensor, pattern: NMPattern) -> PatternStats? {
    guard tensor.shape.count >= 2, let isZero = zeroTest(tensor.dtype) else { return nil }
    let cols = tensor.shape.last!
    let rows = cols == 0 ? 0 : tensor.elementCount / cols
    guard cols % pattern.m == 0 else { return PatternStats(pattern: pattern, groups: 0, violations: 0, shapeFits: false) }
    let groups = rows * (cols / pattern.m)
    var violations = 0
    for g in 0..<groups {
      var zeros = 0
      isZero(tensor.bytes, (g * pattern.m)..<((g + 1) * pattern.m), &zeros)
      if zeros < pattern.n { violations += 1 }
    }
    return PatternStats(pattern: pattern, groups: groups, violations: violations, shapeFits: true)
  }

  /// A counter of zero elements over an index range, reading the dtype's bits.
  typealias ZeroCounter = (UnsafeRawBufferPointer, Range<Int>, inout Int) -> Void

  static func zeroTest(_ dtype: DType) -> ZeroCounter? {
    switch dtype {
    case .f32: return { b, r, z in countZeros(b, r, UInt32.self, mask: 0x7FFF_FFFF, &z) }
    case .f64: return { b, r, z in countZeros(b, r, UInt64.self, mask: 0x7FFF_FFFF_FFFF_FFFF, &z) }
    case .f16, .bf16: return { b, r, z in countZeros(b, r, UInt16.self, mask: 0x7FFF, &z) }
    case .f8e4m3, .f8e5m2: return { b, r, z in countZeros(b, r, UInt8.self, mask: 0x7F, &z) }
    // FNUZ types have a single zero (0x00); 0x80 is their NaN. E8M0 has no zero at all.
    case .f8e4m3fnuz, .f8e5m2fnuz, .bool, .u8, .i8: return { b, r, z in countZeros(b, r, UInt8.self, mask: 0xFF, &z) }
    case .f8e8m0: return { _, _, _ in }
    case .i16, .u16: return { b, r, z in countZeros(b, r, UInt16.self, mask: 0xFFFF, &z) }
    case .i32, .u32: return { b, r, z in countZeros(b, r, UInt32.self, mask: 0xFFFF_FFFF, &z) }
    case .i64, .u64: return { b, r, z in countZeros(b, r, UInt64.self, mask: UInt64.max, &z) }
    case .f4, .f6e2m3, .f6e3m2, .c64: return nil
    }
  }

  @inline(__always)
  static func countZeros<T: FixedWidthInteger>(
    _ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _: T.Type, mask: T, _ zeros: inout Int
  ) {
    guard let base = bytes.baseAddress else { return }
    let stride = MemoryLayout<T>.size
    var count = 0
    for i in range where base.loadUnaligned(fromByteOffset: i * stride, as: T.self) & mask == 0 { count += 1 }
    zeros += count
  }
}
