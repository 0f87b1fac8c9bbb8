// The masks of compressed sparse tensors, and the gather / scatter between a dense tensor and its stored
// values. An element is stored when any of its bits is set, so -0.0 (and any other pattern) survives a
// round trip bit for bit; dropped elements come back as all-zero bits. Rows are the tensor flattened to
// (product of leading dims, last dim).
//
//   bitmask   one bit per element, LSB first (element c of a row -> byte c>>3, bit c&7), each row padded
//             to whole bytes with zero bits: numpy packbits(axis=-1, bitorder="little"), as
//             compressed-tensors stores it (formats.md §2.6). Values: the stored elements, row-major.
//   group     K kept positions out of every M consecutive elements of a row: each group's position set
//             is an index into the C(M,K) sets in lexicographic order, packed G = floor(log_C 256)
//             groups per byte (byte = c0 + C*c1 + C^2*c2 ...; 2:4 packs 3 groups of 6 sets per byte, 2/3
//             of a bit per element). Values: K per group, row-major, so a group with fewer than K stored
//             elements also stores zero bits at the lowest free positions.

import Dispatch

#if canImport(Glibc)
  import Glibc
#endif

/// K kept positions in every group of M (2:4 keeps 2 of 4).
public struct GroupCode: Equatable, Sendable {
  public let keep: Int
  public let group: Int
  /// Position sets (bit j = position j kept), lexicographic.
  let sets: [UInt8]
  /// Position set -> its index, or -1 when it does not keep exactly K.
  let index: [Int16]
  public var groupsPerByte: Int {
    var g = 1, power = sets.count
    while power * sets.count <= 256 { power *= sets.count; g += 1 }
    return g
  }

  public init?(keep: Int, group: Int) {
    guard group >= 2, group <= 8, keep >= 1, keep < group else { return nil }
    self.keep = keep
    self.group = group
    var sets: [UInt8] = []
    for bits in 0..<(1 << group) where bits.nonzeroBitCount == keep { sets.append(UInt8(bits)) }
    // Lexicographic by the sorted position lists: compare the bit patterns from the lowest position.
    sets.sort { a, b in
      for j in 0..<group where (a >> j) & 1 != (b >> j) & 1 { return (a >> j) & 1 == 1 }
      return false
    }
    self.sets = sets
    var index = [Int16](repeating: -1, count: 256)
    for (i, s) in sets.enumerated() { index[Int(s)] = Int16(i) }
    self.index = index
  }

  public static let twoFour = GroupCode(keep: 2, group: 4)!

  public func codeBytes(groups: Int) -> Int { (groups + groupsPerByte - 1) / groupsPerByte }
}

public enum SparseMasks {
  public static func rowBytes(cols: Int) -> Int { (cols + 7) / 8 }

  /// The tensor as (rows, cols): leading dimensions flattened (a scalar or vector is one row).
  public static func rowsAndCols(_ shape: [Int]) -> (rows: Int, cols: Int) {
    guard let cols = shape.last else { return (1, 1) }
    return (cols == 0 ? 0 : shape.dropLast().reduce(1, *), cols)
  }

  /// Bitmask of stored elements and the stored values.
  public static func encodeBitmask(_ dense: UnsafeRawBufferPointer, rows: Int, cols: Int, elementSize: Int) -> (mask: [UInt8], values: [UInt8]) {
    switch elementSize {
    case 1: return encodeBitmask(dense, rows, cols, UInt8.self)
    case 2: return encodeBitmask(dense, rows, cols, UInt16.self)
    case 4: return encodeBitmask(dense, rows, cols, UInt32.self)
    default: return encodeBitmask(dense, rows, cols, UInt64.self)
    }
  }

  static func encodeBitmask<T: FixedWidthInteger>(_ dense: UnsafeRawBufferPointer, _ rows: Int, _ cols: Int, _: T.Type) -> (mask: [UInt8], values: [UInt8]) {
    let rb = rowBytes(cols: cols)
    var mask = [UInt8](repeating: 0, count: rows * rb)
    let size = MemoryLayout<T>.size
    // One spare slot: every element is written at the next free slot, and the slot advances only when
    // the element is stored (no branch on the data).
    var values = [UInt8](repeating: 0, count: (rows * cols + 1) * size)
    var stored = 0
    if rows * cols > 0 {
      let d = dense.baseAddress!
      mask.withUnsafeMutableBufferPointer { m in
        values.withUnsafeMutableBytes { v in
          let out = v.baseAddress!
          for r in 0..<rows {
            var c = 0
            while c < cols {
              var bits: UInt8 = 0
              let end = min(c &+ 8, cols)
              for j in c..<end {
                let x = d.loadUnaligned(fromByteOffset: (r &* cols &+ j) &* size, as: T.self)
                out.storeBytes(of: x, toByteOffset: stored &* size, as: T.self)
                let keep = x != 0 ? 1 : 0
                bits |= UInt8(truncatingIfNeeded: keep << (j &- c))
                stored &+= keep
              }
              m[r &* rb &+ c >> 3] = bits
              c = end
            }
          }
        }
      }
    }
    values.removeLast(values.count - stored * size)
    return (mask, values)
  }

  /// Why a bitmask does not describe `storedCount` values of a rows x cols tensor, or nil.
  public static func checkBitmask(_ mask: UnsafeRawBufferPointer, rows: Int, cols: Int, storedCount: Int) -> String? {
    let rb = rowBytes(cols: cols)
    guard mask.count == rows * rb else { return "the mask has \(mask.count) bytes, \(rows * rb) expected for \(rows) x \(cols)" }
    var total = 0
    let padding = cols % 8 == 0 ? UInt8(0) : ~UInt8((1 << (cols % 8)) - 1)
    for r in 0..<rows {
      if padding != 0, mask[r * rb + rb - 1] & padding != 0 { return "row \(r) of the mask sets padding bits past column \(cols)" }
      for b in 0..<rb { total += mask[r * rb + b].nonzeroBitCount }
    }
    guard total == storedCount else { return "the mask sets \(total) bits but \(storedCount) values are stored" }
    return nil
  }

  /// Scatters stored values into `dense` (zero-filled first), rows split over the cores. The mask must
  /// have passed `checkBitmask`.
  public static func decodeBitmask(
    _ mask: UnsafeRawBufferPointer, _ values: UnsafeRawBufferPointer, rows: Int, cols: Int, elementSize: Int,
    into dense: UnsafeMutableRawBufferPointer
  ) {
    guard rows * cols > 0 else { return }
    let rb = rowBytes(cols: cols)
    let blocks = min(rows, Parallel.workers * 4)
    var starts = [Int](repeating: 0, count: blocks + 1)  // first stored value of each row block
    for k in 0..<blocks {
      let (r0, r1) = (rows * k / blocks, rows * (k + 1) / blocks)
      var n = 0
      for b in (r0 * rb)..<(r1 * rb) { n += mask[b].nonzeroBitCount }
      starts[k + 1] = starts[k] + n
    }
    nonisolated(unsafe) let (m, v, d) = (mask.baseAddress!, values.baseAddress, dense.baseAddress!)
    let starting = starts
    DispatchQueue.concurrentPerform(iterations: blocks) { k in
      let (r0, r1) = (rows * k / blocks, rows * (k + 1) / blocks)
      memset(d + r0 * cols * elementSize, 0, (r1 - r0) * cols * elementSize)
      switch elementSize {
      case 1: scatterRows(m, v, d, r0..<r1, cols, starting[k], UInt8.self)
      case 2: scatterRows(m, v, d, r0..<r1, cols, starting[k], UInt16.self)
      case 4: scatterRows(m, v, d, r0..<r1, cols, starting[k], UInt32.self)
      default: scatterRows(m, v, d, r0..<r1, cols, starting[k], UInt64.self)
      }
    }
  }

  static func scatterRows<T: FixedWidthInteger>(
    _ mask: UnsafeRawPointer, _ values: UnsafeRawPointer?, _ dense: UnsafeMutableRawPointer, _ rows: Range<Int>, _ cols: Int,
    _ first: Int, _: T.Type
  ) {
    guard let values else { return }
    let rb = rowBytes(cols: cols)
    let (input, out) = (values.assumingMemoryBound(to: T.self), dense.assumingMemoryBound(to: T.self))
    var next = first
    for r in rows {
      for b in 0..<rb {
        var bits = mask.load(fromByteOffset: r &* rb &+ b, as: UInt8.self)
        while bits != 0 {
          out[r &* cols &+ b &* 8 &+ bits.trailingZeroBitCount] = input[next]
          next &+= 1
          bits &= bits &- 1
        }
      }
    }
  }

  /// Group codes and values, or nil when some group stores more than K elements (or cols % M != 0).
  public static func encodeGroups(_ dense: UnsafeRawBufferPointer, rows: Int, cols: Int, elementSize: Int, code: GroupCode) -> (codes: [UInt8], values: [UInt8])? {
    switch elementSize {
    case 1: return encodeGroups(dense, rows * cols, code, UInt8.self)
    case 2: return encodeGroups(dense, rows * cols, code, UInt16.self)
    case 4: return encodeGroups(dense, rows * cols, code, UInt32.self)
    default: return encodeGroups(dense, rows * cols, code, UInt64.self)
    }
  }

  static func encodeGroups<T: FixedWidthInteger>(_ dense: UnsafeRawBufferPointer, _ count: Int, _ code: GroupCode, _: T.Type) -> (codes: [UInt8], values: [UInt8])? {
    guard count % code.group == 0 else { return nil }
    let (m, keep) = (code.group, code.keep)
    let groups = count / m
    let (gpb, setCount) = (code.groupsPerByte, code.sets.count)
    // A group's stored positions -> the K-set that covers them with the lowest free positions (-1: too many).
    var cover = [Int16](repeating: -1, count: 1 << m)
    for bits in 0..<(1 << m) where bits.nonzeroBitCount <= keep {
      var set = bits, j = 0
      while set.nonzeroBitCount < keep {
        if set & (1 << j) == 0 { set |= 1 << j }
        j += 1
      }
      cover[bits] = code.index[set]
    }
    var codes = [UInt8](repeating: 0, count: code.codeBytes(groups: groups))
    var values = [T](repeating: 0, count: groups * keep)
    guard groups > 0 else { return (codes, []) }
    let d = dense.baseAddress!
    let fits: Bool = values.withUnsafeMutableBufferPointer { v in
      codes.withUnsafeMutableBufferPointer { c in
        cover.withUnsafeBufferPointer { cover in
          code.sets.withUnsafeBufferPointer { sets in
            var g = 0
            for byte in 0..<c.count {
              var packed = 0, place = 1
              let last = min(groups, g &+ gpb)
              while g < last {
                var stored = 0
                for j in 0..<m where d.loadUnaligned(fromByteOffset: (g &* m &+ j) &* MemoryLayout<T>.size, as: T.self) != 0 {
                  stored |= 1 << j
                }
                let index = Int(cover[stored])
                if index < 0 { return false }
                var set = Int(sets[index]), k = g &* keep
                while set != 0 {
                  let j = set.trailingZeroBitCount
                  v[k] = d.loadUnaligned(fromByteOffset: (g &* m &+ j) &* MemoryLayout<T>.size, as: T.self)
                  k &+= 1
                  set &= set &- 1
                }
                packed &+= index &* place
                place &*= setCount
                g &+= 1
              }
              c[byte] = UInt8(truncatingIfNeeded: packed)
            }
            return true
          }
        }
      }
    }
    guard fits else { return nil }
    return (codes, values.withUnsafeBytes { Array($0) })
  }

  /// Why group codes do not fit, or nil.
  public static func checkGroups(_ codes: UnsafeRawBufferPointer, groups: Int, code: GroupCode) -> String? {
    guard codes.count == code.codeBytes(groups: groups) else { return "\(codes.count) code bytes, \(code.codeBytes(groups: groups)) expected for \(groups) groups" }
    let (gpb, setCount) = (code.groupsPerByte, code.sets.count)
    for (i, byte) in codes.enumerated() {
      let inByte = min(gpb, groups - i * gpb)
      var limit = 1
      for _ in 0..<inByte { limit *= setCount }
      if Int(byte) >= limit { return "code byte \(i) (\(byte)) names no set of \(code.keep) of \(code.group)" }
    }
    return nil
  }

  /// Writes every group's K values at its positions (zeros elsewhere), groups split over the cores.
  public static func decodeGroups(
    _ codes: UnsafeRawBufferPointer, _ values: UnsafeRawBufferPointer, groups: Int, elementSize: Int, code: GroupCode,
    into dense: UnsafeMutableRawBufferPointer
  ) {
    switch elementSize {
    case 1: decodeGroups(codes, values, groups, code, dense, UInt8.self)
    case 2: decodeGroups(codes, values, groups, code, dense, UInt16.self)
    case 4: decodeGroups(codes, values, groups, code, dense, UInt32.self)
    default: decodeGroups(codes, values, groups, code, dense, UInt64.self)
    }
  }

  static func decodeGroups<T: FixedWidthInteger>(
    _ codes: UnsafeRawBufferPointer, _ values: UnsafeRawBufferPointer, _ groups: Int, _ code: GroupCode,
    _ dense: UnsafeMutableRawBufferPointer, _: T.Type
  ) {
    guard groups > 0 else { return }
    let (gpb, setCount, keep, m) = (code.groupsPerByte, code.sets.count, code.keep, code.group)
    // Code byte -> the position sets of its groups (gpb per byte).
    var digits = [UInt8](repeating: 0, count: 256 * gpb)
    for byte in 0..<256 {
      var packed = byte
      for i in 0..<gpb {
        digits[byte * gpb + i] = code.sets[packed % setCount]
        packed /= setCount
      }
    }
    let bytes = code.codeBytes(groups: groups)
    let blocks = min(bytes, Parallel.workers * 4)
    // Typed pointers made here, so the parallel body captures no metatype.
    nonisolated(unsafe) let c = codes.baseAddress!
    nonisolated(unsafe) let input = values.baseAddress!.assumingMemoryBound(to: T.self)
    nonisolated(unsafe) let out = dense.baseAddress!.assumingMemoryBound(to: T.self)
    nonisolated(unsafe) let raw = dense.baseAddress!
    let size = MemoryLayout<T>.size
    let table = digits
    DispatchQueue.concurrentPerform(iterations: blocks) { k in
      let g0 = bytes * k / blocks * gpb, g1 = min(groups, bytes * (k + 1) / blocks * gpb)
      memset(raw + g0 * m * size, 0, (g1 - g0) * m * size)
      table.withUnsafeBufferPointer { table in
        var g = g0
        while g < g1 {
          let row = Int(c.load(fromByteOffset: g / gpb, as: UInt8.self)) &* gpb
          let last = min(g1, g &+ gpb)
          var i = 0
          while g < last {
            var set = Int(table[row &+ i]), k = g &* keep
            while set != 0 {
              out[g &* m &+ set.trailingZeroBitCount] = input[k]
              k &+= 1
              set &= set &- 1
            }
            g &+= 1
            i &+= 1
          }
        }
      }
    }
  }

  @inline(__always) static func isZero(_ p: UnsafeRawPointer, _ size: Int) -> Bool {
    switch size {
    case 1: return p.load(as: UInt8.self) == 0
    case 2: return p.loadUnaligned(as: UInt16.self) == 0
    case 4: return p.loadUnaligned(as: UInt32.self) == 0
    default: return p.loadUnaligned(as: UInt64.self) == 0
    }
  }

  /// Elements whose bits are not all zero.
  public static func storedCount(_ dense: UnsafeRawBufferPointer, elementSize: Int) -> Int {
    guard let p = dense.baseAddress else { return 0 }
    var n = 0
    for i in 0..<(dense.count / elementSize) where !isZero(p + i &* elementSize, elementSize) { n &+= 1 }
    return n
  }
}
