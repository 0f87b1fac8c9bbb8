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
    let n = tensor.elementCount
    guard let word = zeroWord(tensor.dtype) else { return nil }
    // One case per word size, so each kernel is specialised (no generic dispatch per element).
    let zeros = tensor.withUnsafeBytes { b in
      switch word {
      case .u8(let mask): return countZeros(b, n, mask: mask)
      case .u16(let mask): return countZeros(b, n, mask: mask)
      case .u32(let mask): return countZeros(b, n, mask: mask)
      case .u64(let mask): return countZeros(b, n, mask: mask)
      case .noZero: return 0
      }
    }
    return SparsityStats(elements: n, zeros: zeros)
  }

  /// Checks every group of M along the last dimension for at least N zeros.
  /// Nil for tensors of rank < 2 or dtypes without a bit-level zero test.
  public static func check(_ tensor: Tensor, pattern: NMPattern) -> PatternStats? {
    guard tensor.shape.count >= 2, let cols = tensor.shape.last, let word = zeroWord(tensor.dtype) else { return nil }
    guard cols % pattern.m == 0 else { return PatternStats(pattern: pattern, groups: 0, violations: 0, shapeFits: false) }
    let groups = tensor.elementCount / pattern.m
    let (m, n) = (pattern.m, pattern.n)
    let violations = tensor.withUnsafeBytes { b in
      switch word {
      case .u8(let mask): return countViolations(b, groups: groups, m: m, n: n, mask: mask)
      case .u16(let mask): return countViolations(b, groups: groups, m: m, n: n, mask: mask)
      case .u32(let mask): return countViolations(b, groups: groups, m: m, n: n, mask: mask)
      case .u64(let mask): return countViolations(b, groups: groups, m: m, n: n, mask: mask)
      case .noZero: return n == 0 ? 0 : groups
      }
    }
    return PatternStats(pattern: pattern, groups: groups, violations: violations, shapeFits: true)
  }

  /// DType.zeroTest as a word of the element's size, so each kernel is specialised for it.
  enum ZeroWord {
    case u8(UInt8), u16(UInt16), u32(UInt32), u64(UInt64), noZero
  }

  static func zeroWord(_ dtype: DType) -> ZeroWord? {
    switch dtype.zeroTest {
    case nil: return nil
    case .never: return .noZero
    case .bits(let mask):
      switch dtype.bits {
      case 8: return .u8(UInt8(truncatingIfNeeded: mask))
      case 16: return .u16(UInt16(truncatingIfNeeded: mask))
      case 32: return .u32(UInt32(truncatingIfNeeded: mask))
      default: return .u64(mask)
      }
    }
  }

  static func countZeros<T: FixedWidthInteger>(_ bytes: UnsafeRawBufferPointer, _ n: Int, mask: T) -> Int {
    guard let base = bytes.baseAddress else { return 0 }
    var count = 0
    for i in 0..<n where base.loadUnaligned(fromByteOffset: i &* MemoryLayout<T>.size, as: T.self) & mask == 0 {
      count &+= 1
    }
    return count
  }

  static func countViolations<T: FixedWidthInteger>(
    _ bytes: UnsafeRawBufferPointer, groups: Int, m: Int, n: Int, mask: T
  ) -> Int {
    guard let base = bytes.baseAddress else { return 0 }
    var violations = 0
    for g in 0..<groups {
      var zeros = 0
      for j in 0..<m where base.loadUnaligned(fromByteOffset: (g &* m &+ j) &* MemoryLayout<T>.size, as: T.self) & mask == 0 {
        zeros &+= 1
      }
      if zeros < n { violations &+= 1 }
    }
    return violations
  }
}
