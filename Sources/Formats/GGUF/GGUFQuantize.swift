// ggml block quantisation for GGUF output (formats.md §4.3), following ggml-quants.c's reference
// quantisers (`quantize_row_*_ref`) block for block, with one addition for pruned weights: the
// sparsity pattern survives. For the symmetric types zero is exact (Q8_0's q = 0, Q4_0's q = 8), so a
// pruned weight stays zero; a kept weight that would round to zero is nudged to the nearest non-zero
// quantum of its sign, and counted. The same holds for the plain float types: a kept f32 too small for
// f16 (or bf16) becomes the smallest subnormal of its sign instead of zero.

public enum GGUFQuantize {
  /// What quantising a tensor did to its zeros.
  public struct Counts: Sendable, Equatable {
    /// Kept (non-zero) weights that would have become zero and were moved to the nearest non-zero quantum.
    public var nudged = 0
    public init() {}
    public static func + (a: Counts, b: Counts) -> Counts {
      var c = a
      c.nudged += b.nudged
      return c
    }
  }

  /// The types `espalier convert … out.gguf --dtype` writes.
  public static let outputTypes: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0]

  /// Encodes `count` f32 values (a whole number of blocks) as `type` into `out` (count / blockSize ·
  /// typeSize bytes). Returns what it had to nudge.
  public static func quantize(
    _ type: GGMLType, _ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer
  ) -> Counts {
    precondition(count % type.blockSize == 0, "quantize: \(count) values are not whole \(type.name) blocks")
    var counts = Counts()
    switch type.id {
    case GGMLType.f32.id:
      out.copyMemory(from: x, byteCount: count * 4)
    case GGMLType.f16.id:
      let o = out.bindMemory(to: UInt16.self, capacity: count)
      for i in 0..<count {
        var h = Float32Conversion.floatToF16(x[i])
        if h & 0x7FFF == 0 && x[i] != 0 {
          h = (h & 0x8000) | 1  // the smallest subnormal of x's sign
          counts.nudged += 1
        }
        o[i] = h
      }
    case GGMLType.bf16.id:
      let o = out.bindMemory(to: UInt16.self, capacity: count)
      for i in 0..<count {
        var h = Float32Conversion.floatToBF16(x[i])
        if h & 0x7FFF == 0 && x[i] != 0 {
          h = (h & 0x8000) | 1
          counts.nudged += 1
        }
        o[i] = h
      }
    case GGMLType.q8_0.id:
      for b in 0..<(count / 32) { counts.nudged += q8_0(x + 32 * b, out + 34 * b) }
    case GGMLType.q4_0.id:
      for b in 0..<(count / 32) { counts.nudged += q4_0(x + 32 * b, out + 18 * b) }
    default:
      preconditionFailure("quantize: \(type.name) is not an output type")
    }
    return counts
  }

  @inline(__always) static func storeHalf(_ v: Float, _ p: UnsafeMutableRawPointer) -> Float {
    let h = Float32Conversion.floatToF16(v)
    p.storeBytes(of: h.littleEndian, as: UInt16.self)
    return Float32Conversion.f16ToFloat(h)
  }

  /// The stored scale of a block whose real scale `d` is non-zero: f16(d), or the smallest f16 subnormal of
  /// d's sign when f16(d) underflows (every element would otherwise decode to zero).
  @inline(__always) static func nonZeroHalf(_ d: Float) -> UInt16 {
    let h = Float32Conversion.floatToF16(d)
    return h & 0x7FFF == 0 ? (d < 0 ? 0x8001 : 0x0001) : h
  }

  /// Q8_0: d = amax/127 (f16), q = round(x/d) half away from zero; 34 bytes.
  static func q8_0(_ x: UnsafePointer<Float>, _ block: UnsafeMutableRawPointer) -> Int {
    var amax: Float = 0
    for j in 0..<32 { amax = max(amax, abs(x[j])) }
    var d = amax / 127
    var id: Float = d != 0 ? 1 / d : 0
    let h: UInt16 = d != 0 ? nonZeroHalf(d) : 0
    block.storeBytes(of: h.littleEndian, as: UInt16.self)
    let stored = Float32Conversion.f16ToFloat(h)
    if d != 0 && Float32Conversion.floatToF16(d) & 0x7FFF == 0 {
      // The scale itself underflowed: quantise against the stored one so the values still mean something.
      d = stored
      id = 1 / stored
    }
    var nudged = 0
    for j in 0..<32 {
      var q = Int((x[j] * id).rounded())
      q = min(127, max(-127, q))
      if q == 0 && x[j] != 0 {
        q = x[j] > 0 ? 1 : -1
        nudged += 1
      }
      block.storeBytes(of: Int8(q), toByteOffset: 2 + j, as: Int8.self)
    }
    return nudged
  }

  /// Q4_0: max = the element of largest |x| (the first on a tie), d = max/−8 (f16),
  /// q = min(15, trunc(x/d + 8.5)); element j in the low nibble of byte j, j + 16 in its high nibble.
  static func q4_0(_ x: UnsafePointer<Float>, _ block: UnsafeMutableRawPointer) -> Int {
    var amax: Float = 0
    var maxValue: Float = 0
    for j in 0..<32 where abs(x[j]) > amax {
      amax = abs(x[j])
      maxValue = x[j]
    }
    var d = maxValue / -8
    var id: Float = d != 0 ? 1 / d : 0
    let h: UInt16 = d != 0 ? nonZeroHalf(d) : 0
    block.storeBytes(of: h.littleEndian, as: UInt16.self)
    if d != 0 && Float32Conversion.floatToF16(d) & 0x7FFF == 0 {
      d = Float32Conversion.f16ToFloat(h)
      id = 1 / d
    }
    var nudged = 0
    var q = [UInt8](repeating: 0, count: 32)
    for j in 0..<32 {
      var v = min(15, Int(x[j] * id + 8.5))  // Int() truncates toward zero, as the C cast does
      v = max(0, v)
      if v == 8 && x[j] != 0 {
        // (q − 8)·d must take x's sign.
        v = (x[j] > 0) == (d > 0) ? 9 : 7
        nudged += 1
      }
      q[j] = UInt8(v)
    }
    for j in 0..<16 { block.storeBytes(of: q[j] | (q[j + 16] << 4), toByteOffset: 2 + j, as: UInt8.self) }
    return nudged
  }
}
