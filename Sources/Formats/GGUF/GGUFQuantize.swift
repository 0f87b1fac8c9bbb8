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
  public static let outputTypes: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q6_K]

  /// Encodes `count` f32 values (a whole number of blocks) as `type` into `out` (count / blockSize ·
  /// typeSize bytes). Returns what it had to nudge.
  /// `keepNonZero: false` is ggml's reference quantiser exactly (for tests against llama.cpp's bytes).
  public static func quantize(
    _ type: GGMLType, _ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer, keepNonZero: Bool = true
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
      for b in 0..<(count / 32) { counts.nudged += q8_0(x + 32 * b, out + 34 * b, keepNonZero: keepNonZero) }
    case GGMLType.q4_0.id:
      for b in 0..<(count / 32) { counts.nudged += q4_0(x + 32 * b, out + 18 * b, keepNonZero: keepNonZero) }
    case GGMLType.q6_K.id:
      for b in 0..<(count / 256) { counts.nudged += q6_K(x + 256 * b, out + 210 * b, keepNonZero: keepNonZero) }
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
  static func q8_0(_ x: UnsafePointer<Float>, _ block: UnsafeMutableRawPointer, keepNonZero: Bool) -> Int {
    var amax: Float = 0
    for j in 0..<32 { amax = max(amax, abs(x[j])) }
    var d = amax / 127
    var id: Float = d != 0 ? 1 / d : 0
    let h: UInt16 = d == 0 ? Float32Conversion.floatToF16(d) : keepNonZero ? nonZeroHalf(d) : Float32Conversion.floatToF16(d)
    block.storeBytes(of: h.littleEndian, as: UInt16.self)
    let stored = Float32Conversion.f16ToFloat(h)
    if keepNonZero && d != 0 && Float32Conversion.floatToF16(d) & 0x7FFF == 0 {
      // The scale itself underflowed: quantise against the stored one so the values still mean something.
      d = stored
      id = 1 / stored
    }
    var nudged = 0
    for j in 0..<32 {
      var q = Int((x[j] * id).rounded())
      q = min(127, max(-127, q))
      if keepNonZero && q == 0 && x[j] != 0 {
        q = x[j] > 0 ? 1 : -1
        nudged += 1
      }
      block.storeBytes(of: Int8(q), toByteOffset: 2 + j, as: Int8.self)
    }
    return nudged
  }

  /// Q4_0: max = the element of largest |x| (the first on a tie), d = max/−8 (f16; −0 for a zero block,
  /// as ggml stores it),
  /// q = min(15, trunc(x/d + 8.5)); element j in the low nibble of byte j, j + 16 in its high nibble.
  static func q4_0(_ x: UnsafePointer<Float>, _ block: UnsafeMutableRawPointer, keepNonZero: Bool) -> Int {
    var amax: Float = 0
    var maxValue: Float = 0
    for j in 0..<32 where abs(x[j]) > amax {
      amax = abs(x[j])
      maxValue = x[j]
    }
    var d = maxValue / -8
    var id: Float = d != 0 ? 1 / d : 0
    let h: UInt16 = d == 0 ? Float32Conversion.floatToF16(d) : keepNonZero ? nonZeroHalf(d) : Float32Conversion.floatToF16(d)
    block.storeBytes(of: h.littleEndian, as: UInt16.self)
    if keepNonZero && d != 0 && Float32Conversion.floatToF16(d) & 0x7FFF == 0 {
      d = Float32Conversion.f16ToFloat(h)
      id = 1 / d
    }
    var nudged = 0
    var q = [UInt8](repeating: 0, count: 32)
    for j in 0..<32 {
      var v = min(15, Int(x[j] * id + 8.5))  // Int() truncates toward zero, as the C cast does
      v = max(0, v)
      if keepNonZero && v == 8 && x[j] != 0 {
        // (q − 8)·d must take x's sign.
        v = (x[j] > 0) == (d > 0) ? 9 : 7
        nudged += 1
      }
      q[j] = UInt8(v)
    }
    for j in 0..<16 { block.storeBytes(of: q[j] | (q[j + 16] << 4), toByteOffset: 2 + j, as: UInt8.self) }
    return nudged
  }

  /// ggml's nearest_int: round to nearest, ties to even (the 1.5·2²³ trick), for |x| ≤ 2²².
  @inline(__always) static func nearest(_ x: Float) -> Int { Int(x.rounded(.toNearestOrEven)) }

  /// ggml's make_qx_quants with rmse_type 1 (weights x²), as Q6_K uses it on a sub-block of 16: the scale
  /// that minimises the weighted error over 19 candidate inverse scales −(nmax + 0.1·k)/max, k = −9…9,
  /// where max is the element of largest |x| (the first on a tie). Fills `levels` with l + nmax.
  static func weightedScale(_ x: UnsafePointer<Float>, count n: Int, nmax: Int, levels: UnsafeMutablePointer<Int8>) -> Float {
    var amax: Float = 0
    var maxValue: Float = 0
    for i in 0..<n where abs(x[i]) > amax {
      amax = abs(x[i])
      maxValue = x[i]
    }
    guard amax >= 1e-15 else {
      for i in 0..<n { levels[i] = 0 }
      return 0
    }
    let top = Float(nmax)
    func sums(_ inverse: Float) -> (Float, Float) {
      var (sumlx, suml2): (Float, Float) = (0, 0)
      for i in 0..<n {
        let l = Float(max(-nmax, min(nmax - 1, nearest(inverse * x[i]))))
        let w = x[i] * x[i]
        sumlx += w * x[i] * l
        suml2 += w * l * l
      }
      return (sumlx, suml2)
    }
    func fill(_ inverse: Float) {
      for i in 0..<n { levels[i] = Int8(nmax + max(-nmax, min(nmax - 1, nearest(inverse * x[i])))) }
    }
    var inverse = -top / maxValue
    fill(inverse)
    var (sumlx, suml2) = sums(inverse)
    var scale: Float = suml2 != 0 ? sumlx / suml2 : 0
    var best = scale * sumlx
    for k in -9...9 where k != 0 {
      inverse = -(top + 0.1 * Float(k)) / maxValue
      (sumlx, suml2) = sums(inverse)
      if suml2 > 0 && sumlx * sumlx > best * suml2 {
        fill(inverse)
        scale = sumlx / suml2
        best = scale * sumlx
      }
    }
    return scale
  }

  /// Q6_K (256 values, 210 bytes): 16 sub-blocks of 16 with an int8 scale each (scale of the sub-block by
  /// `weightedScale`, requantised against the block's d = max scale / −128 in f16), 6-bit levels l + 32
  /// split into ql (low nibbles) and qh (high two bits), d last. With `keepNonZero`, a sub-block holding a
  /// kept weight never gets scale 0, and a kept weight never level 32 (zero).
  static func q6_K(_ x: UnsafePointer<Float>, _ block: UnsafeMutableRawPointer, keepNonZero: Bool) -> Int {
    var levels = [Int8](repeating: 0, count: 256)
    var scales = [Float](repeating: 0, count: 16)
    var maxScale: Float = 0
    var maxAbsScale: Float = 0
    levels.withUnsafeMutableBufferPointer { L in
      for b in 0..<16 {
        let s = weightedScale(x + 16 * b, count: 16, nmax: 32, levels: L.baseAddress! + 16 * b)
        scales[b] = s
        if abs(s) > maxAbsScale {
          maxAbsScale = abs(s)
          maxScale = s
        }
      }
    }
    let hasKept = (0..<256).contains { x[$0] != 0 }
    block.initializeMemory(as: UInt8.self, repeating: 0, count: 210)
    if maxAbsScale < 1e-15 && !(keepNonZero && hasKept) { return 0 }
    var d: UInt16
    var subScales = [Int8](repeating: 0, count: 16)
    if maxAbsScale >= 1e-15 {
      let inverse = -128 / maxScale
      d = Float32Conversion.floatToF16(1 / inverse)
      for b in 0..<16 { subScales[b] = Int8(min(127, nearest(inverse * scales[b]))) }
    } else {
      // Kept weights too small for any scale: the smallest positive d, and scale 1 below.
      d = 0x0001
    }
    if keepNonZero && d & 0x7FFF == 0 { d = 0x0001 }
    let dValue = Float32Conversion.f16ToFloat(d)
    var nudged = 0
    for b in 0..<16 {
      if keepNonZero && subScales[b] == 0 && (0..<16).contains(where: { x[16 * b + $0] != 0 }) {
        subScales[b] = 1
      }
      let step = dValue * Float(subScales[b])
      guard step != 0 else { continue }
      for i in 0..<16 {
        let v = x[16 * b + i]
        var l = max(-32, min(31, nearest(v / step)))
        if keepNonZero && l == 0 && v != 0 {
          l = (v > 0) == (step > 0) ? 1 : -1
          nudged += 1
        }
        levels[16 * b + i] = Int8(l + 32)
      }
    }
    let ql = block
    let qh = block + 128
    for half in 0..<2 {
      let j = 128 * half
      for l in 0..<32 {
        let q1 = UInt8(levels[j + l]), q2 = UInt8(levels[j + l + 32]), q3 = UInt8(levels[j + l + 64]), q4 = UInt8(levels[j + l + 96])
        ql.storeBytes(of: (q1 & 0xF) | (q3 & 0xF) << 4, toByteOffset: 64 * half + l, as: UInt8.self)
        ql.storeBytes(of: (q2 & 0xF) | (q4 & 0xF) << 4, toByteOffset: 64 * half + l + 32, as: UInt8.self)
        qh.storeBytes(of: (q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6, toByteOffset: 32 * half + l, as: UInt8.self)
      }
    }
    for b in 0..<16 { block.storeBytes(of: subScales[b], toByteOffset: 192 + b, as: Int8.self) }
    block.storeBytes(of: d.littleEndian, toByteOffset: 208, as: UInt16.self)
    return nudged
  }
}
