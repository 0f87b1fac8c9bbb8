// Conversion between stored element types and f32, the compute type of the project.
//
// Widening (any numeric dtype -> f32) and narrowing (f32 -> F16, BF16, F8_E4M3, F8_E5M2, F64) are bulk
// loops over raw pointers that the optimiser vectorises; the scalar functions beside them are the
// definitions the tests check against numpy / ml_dtypes goldens (fixtures/dtypes/goldens.json).
//
// Rounding is IEEE round-to-nearest-even everywhere. Overflow gives infinity where the format has one
// (F16, BF16, F8_E5M2) and saturates to the largest finite value where it has none (F8_E4M3, the OCP
// "fn" variant: max 448, the all-ones code is NaN). NaN stays NaN (quiet, sign kept).
// Source bytes may be unaligned (safetensors does not require alignment), so loads are unaligned.

public enum Float32Conversion {
  // MARK: Bulk

  /// Widens `count` elements of `dtype` at `src` into f32 at `dst`.
  public static func widen(
    _ dtype: DType, from src: UnsafeRawPointer, to dst: UnsafeMutablePointer<Float>, count: Int
  ) throws(FormatError) {
    switch dtype {
    case .f32: UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count * 4)
    case .bf16: for i in 0..<count { dst[i] = bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
    case .f16: for i in 0..<count { dst[i] = f16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
    case .f64: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
    case .f8e4m3: widenByTable(f8e4m3Table, src, dst, count)
    case .f8e5m2: widenByTable(f8e5m2Table, src, dst, count)
    case .bool, .u8: for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: UInt8.self)) }
    case .i8: for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: Int8.self)) }
    case .i16: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)) }
    case .u16: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
    case .i32: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
    case .u32: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)) }
    case .i64: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
    case .u64: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)) }
    case .f4, .f6e2m3, .f6e3m2, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz, .c64:
      throw .unsupportedConversion(from: dtype, to: .f32)
    }
  }

  /// Narrows `count` f32 values at `src` into `dtype` at `dst`. Integer targets are not supported: a
  /// weight never becomes an integer by conversion in this toolkit.
  public static func narrow(
    _ dtype: DType, from src: UnsafePointer<Float>, to dst: UnsafeMutableRawPointer, count: Int
  ) throws(FormatError) {
    switch dtype {
    case .f32: dst.copyMemory(from: src, byteCount: count * 4)
    case .bf16: for i in 0..<count { dst.storeBytes(of: floatToBF16(src[i]), toByteOffset: 2 * i, as: UInt16.self) }
    case .f16: for i in 0..<count { dst.storeBytes(of: floatToF16(src[i]), toByteOffset: 2 * i, as: UInt16.self) }
    case .f64: for i in 0..<count { dst.storeBytes(of: Double(src[i]), toByteOffset: 8 * i, as: Double.self) }
    case .f8e4m3: for i in 0..<count { dst.storeBytes(of: floatToF8E4M3(src[i]), toByteOffset: i, as: UInt8.self) }
    case .f8e5m2: for i in 0..<count { dst.storeBytes(of: floatToF8E5M2(src[i]), toByteOffset: i, as: UInt8.self) }
    default: throw .unsupportedConversion(from: .f32, to: dtype)
    }
  }

  /// Widens in chunks of `chunk` elements into one small reused buffer and hands each chunk to
  /// `consume`. The buffer stays in L1 (8 KiB by default; larger chunks measured slower), so a streaming consumer (a file writer, a reduction) never
  /// pays for writing and re-reading a full-size f32 copy: this is how conversions stream.
  public static func widenStreaming(
    _ dtype: DType, from src: UnsafeRawPointer, count: Int, chunk: Int = 2048,
    consume: (UnsafeBufferPointer<Float>) throws(FormatError) -> Void
  ) throws(FormatError) {
    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(1, min(chunk, count)))
    defer { buffer.deallocate() }
    let bytesPerElement = dtype.bits / 8
    var done = 0
    while done < count {
      let n = min(chunk, count - done)
      try widen(dtype, from: src + done * bytesPerElement, to: buffer, count: n)
      try consume(UnsafeBufferPointer(start: buffer, count: n))
      done += n
    }
  }

  private static func widenByTable(
    _ table: [Float], _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ count: Int
  ) {
    table.withUnsafeBufferPointer { t in
      for i in 0..<count { dst[i] = t[Int(src.load(fromByteOffset: i, as: UInt8.self))] }
    }
  }

  // MARK: BF16 (the top half of an f32)

  @inlinable public static func bf16ToFloat(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

  @inlinable public static func floatToBF16(_ x: Float) -> UInt16 {
    let b = x.bitPattern
    if b & 0x7FFF_FFFF > 0x7F80_0000 { return UInt16(truncatingIfNeeded: b >> 16) | 0x0040 }  // quiet NaN
    // Round to nearest, ties to even: add 0x7FFF plus the lowest kept bit, then truncate.
    return UInt16(truncatingIfNeeded: (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
  }

  // MARK: F16 (IEEE binary16: 5 exponent bits, bias 15, subnormals, inf)

  @inlinable public static func f16ToFloat(_ h: UInt16) -> Float {
    let x = UInt32(h)
    let sign = (x & 0x8000) << 16
    let exponent = (x >> 10) & 0x1F
    let mantissa = x & 0x3FF
    let normal = sign | ((exponent &+ 112) << 23) | (mantissa << 13)
    let special = sign | 0x7F80_0000 | (mantissa << 13)
    // Subnormal: mantissa * 2^-24, exact in f32.
    let subnormal = sign | (Float(mantissa) * 0x1p-24).bitPattern
    let bits = exponent == 0x1F ? special : (exponent == 0 ? subnormal : normal)
    return Float(bitPattern: bits)
  }

  @inlinable public static func floatToF16(_ x: Float) -> UInt16 {
    UInt16(truncatingIfNeeded: narrowMinifloat(x, signBit: 15, mantissaBits: 10, bias: 15, maxFinite: 0x7BFF, infinity: 0x7C00, nan: 0x7E00))
  }

  // MARK: F8 (OCP FP8: E4M3 "fn" without infinities, E5M2 with)

  @inlinable public static func floatToF8E4M3(_ x: Float) -> UInt8 {
    UInt8(truncatingIfNeeded: narrowMinifloat(x, signBit: 7, mantissaBits: 3, bias: 7, maxFinite: 0x7E, infinity: nil, nan: 0x7F))
  }

  @inlinable public static func floatToF8E5M2(_ x: Float) -> UInt8 {
    UInt8(truncatingIfNeeded: narrowMinifloat(x, signBit: 7, mantissaBits: 2, bias: 15, maxFinite: 0x7B, infinity: 0x7C, nan: 0x7E))
  }

  public static func f8e4m3ToFloat(_ code: UInt8) -> Float { f8e4m3Table[Int(code)] }
  public static func f8e5m2ToFloat(_ code: UInt8) -> Float { f8e5m2Table[Int(code)] }

  static let f8e4m3Table: [Float] = (0..<256).map { widenMinifloat(UInt32($0), mantissaBits: 3, bias: 7, hasInfinity: false) }
  static let f8e5m2Table: [Float] = (0..<256).map { widenMinifloat(UInt32($0), mantissaBits: 2, bias: 15, hasInfinity: true) }

  // MARK: Generic minifloats (1 sign bit, E exponent bits, M mantissa bits, IEEE-style subnormals)

  /// Decodes one code. With `hasInfinity`, an all-ones exponent is inf (mantissa 0) or NaN; without it
  /// (E4M3fn) only the all-ones code is NaN and the rest of that exponent is finite.
  static func widenMinifloat(_ code: UInt32, mantissaBits m: Int, bias: Int, hasInfinity: Bool) -> Float {
    let exponentBits = 7 - m
    let magnitude = code & 0x7F
    let negative = code & 0x80 != 0
    let exponent = Int(magnitude >> UInt32(m))
    let mantissa = Int(magnitude & ((1 << UInt32(m)) - 1))
    let allOnes = (1 << exponentBits) - 1
    var value: Float
    if hasInfinity && exponent == allOnes {
      value = mantissa == 0 ? .infinity : .nan
    } else if !hasInfinity && magnitude == 0x7F {
      value = .nan
    } else if exponent == 0 {
      value = Float(mantissa) * Float(sign: .plus, exponent: 1 - bias - m, significand: 1)
    } else {
      value = Float(sign: .plus, exponent: exponent - bias, significand: 1 + Float(mantissa) / Float(1 << m))
    }
    return negative ? -value : value
  }

  /// Encodes f32 into a (1 + E + M)-bit format with the given bias, rounding to nearest even.
  /// Returns the code with the sign at bit E+M. Magnitudes beyond `maxFinite` become `infinity`, or
  /// saturate to `maxFinite` when the format has none.
  @inlinable static func narrowMinifloat(
    _ x: Float, signBit: UInt32, mantissaBits m: Int, bias: Int, maxFinite: UInt32, infinity: UInt32?, nan: UInt32
  ) -> UInt32 {
    let b = x.bitPattern
    let sign = (b >> 31) << signBit
    let a = b & 0x7FFF_FFFF
    if a > 0x7F80_0000 { return sign | nan }
    if a == 0x7F80_0000 { return sign | (infinity ?? maxFinite) }
    let minNormalExponent = 1 - bias
    var code: UInt32
    if a < UInt32(minNormalExponent + 127) << 23 {
      // Below the smallest normal: the result is round(|x| / 2^(emin - m)) subnormal steps. Scaling by a
      // power of two is exact, so the FPU's rounding is the format's rounding. A result of 2^m is the
      // smallest normal's code, which is what the bit layout gives anyway.
      let scaled = Float(bitPattern: a) * Float(sign: .plus, exponent: m - minNormalExponent, significand: 1)
      code = UInt32(scaled.rounded(.toNearestOrEven))
    } else {
      let shift = UInt32(23 - m)
      let rounded = a &+ ((1 << (shift - 1)) - 1) &+ ((a >> shift) & 1)
      code = (rounded >> shift) &- (UInt32(127 - bias) << UInt32(m))
    }
    if code > maxFinite { code = infinity ?? maxFinite }
    return sign | code
  }
}
