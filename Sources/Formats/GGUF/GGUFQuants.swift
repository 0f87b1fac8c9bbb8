// ggml block dequantisation (formats.md §4.3, mirroring ggml-quants.c `dequantize_row_*`).
// Each block of `blockSize` outputs is decoded from `typeSize` bytes; scales are f16. Elements are
// produced in storage order (ne0 fastest), which is row-major torch order.

public enum GGUFQuants {
  public static let supported: Set<UInt32> = [
    GGMLType.f32.id, GGMLType.f16.id, GGMLType.bf16.id, GGMLType.q4_0.id, GGMLType.q4_1.id,
    GGMLType.q8_0.id, GGMLType.q4_K.id, GGMLType.q6_K.id,
  ]

  /// Decodes `count` elements of `type` from `src` into `dst`. Returns false for unsupported types.
  public static func dequantize(
    _ type: GGMLType, from src: UnsafeRawBufferPointer, to dst: UnsafeMutablePointer<Float>, count: Int
  ) -> Bool {
    guard count > 0 else { return true }
    guard let base = src.baseAddress else { return false }
    let blocks = count / type.blockSize
    switch type.id {
    case GGMLType.f32.id: try? Float32Conversion.widen(.f32, from: base, to: dst, count: count)
    case GGMLType.f16.id: try? Float32Conversion.widen(.f16, from: base, to: dst, count: count)
    case GGMLType.bf16.id: try? Float32Conversion.widen(.bf16, from: base, to: dst, count: count)
    case GGMLType.q4_0.id: for b in 0..<blocks { q4_0(base + b * 18, dst + b * 32) }
    case GGMLType.q4_1.id: for b in 0..<blocks { q4_1(base + b * 20, dst + b * 32) }
    case GGMLType.q8_0.id: for b in 0..<blocks { q8_0(base + b * 34, dst + b * 32) }
    case GGMLType.q4_K.id: for b in 0..<blocks { q4_K(base + b * 144, dst + b * 256) }
    case GGMLType.q6_K.id: for b in 0..<blocks { q6_K(base + b * 210, dst + b * 256) }
    default: return false
    }
    return true
  }

  @inline(__always) static func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Float32Conversion.f16ToFloat(p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
  }
  @inline(__always) static func byte(_ p: UnsafeRawPointer, _ offset: Int) -> Int {
    Int(p.load(fromByteOffset: offset, as: UInt8.self))
  }

  /// Q4_0: d:f16, qs[16]; y[j] = (lo(qs[j]) - 8)·d, y[j+16] = (hi(qs[j]) - 8)·d (halves, not interleaved).
  static func q4_0(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = half(block, 0)
    for j in 0..<16 {
      let q = byte(block, 2 + j)
      y[j] = Float((q & 0xF) - 8) * d
      y[j + 16] = Float((q >> 4) - 8) * d
    }
  }

  /// Q4_1: d:f16, m:f16, qs[16]; y = q·d + m.
  static func q4_1(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = half(block, 0)
    let m = half(block, 2)
    for j in 0..<16 {
      let q = byte(block, 4 + j)
      y[j] = Float(q & 0xF) * d + m
      y[j + 16] = Float(q >> 4) * d + m
    }
  }

  /// Q8_0: d:f16, qs[32]:i8; y = q·d.
  static func q8_0(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = half(block, 0)
    for j in 0..<32 { y[j] = Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
  }

  /// The 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes of a Q4_K block.
  @inline(__always) static func scaleMin(_ s: UnsafeRawPointer, _ j: Int) -> (Float, Float) {
    if j < 4 { return (Float(byte(s, j) & 63), Float(byte(s, j + 4) & 63)) }
    let sc = (byte(s, j + 4) & 0xF) | ((byte(s, j - 4) >> 6) << 4)
    let mn = (byte(s, j + 4) >> 4) | ((byte(s, j) >> 6) << 4)
    return (Float(sc), Float(mn))
  }

  /// Q4_K: d:f16, dmin:f16, scales[12], qs[128]; 8 sub-blocks of 32, y = d·sc·q − dmin·mn.
  static func q4_K(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = half(block, 0)
    let dmin = half(block, 2)
    let scales = block + 4
    let qs = block + 16
    for chunk in 0..<4 {
      let (sc1, m1) = scaleMin(scales, 2 * chunk)
      let (sc2, m2) = scaleMin(scales, 2 * chunk + 1)
      let d1 = d * sc1, min1 = dmin * m1
      let d2 = d * sc2, min2 = dmin * m2
      for l in 0..<32 {
        let q = byte(qs, 32 * chunk + l)
        y[64 * chunk + l] = d1 * Float(q & 0xF) - min1
        y[64 * chunk + 32 + l] = d2 * Float(q >> 4) - min2
      }
    }
  }

  /// Q6_K: ql[128], qh[64], scales[16]:i8, d:f16 (last); two halves of 128 outputs.
  static func q6_K(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = half(block, 208)
    for h in 0..<2 {
      let ql = block + 64 * h
      let qh = block + 128 + 32 * h
      let sc = block + 192 + 8 * h
      let out = y + 128 * h
      for l in 0..<32 {
        let s = l / 16
        let high = byte(qh, l)
        let q1 = ((byte(ql, l) & 0xF) | ((high >> 0) & 3) << 4) - 32
        let q2 = ((byte(ql, l + 32) & 0xF) | ((high >> 2) & 3) << 4) - 32
        let q3 = ((byte(ql, l) >> 4) | ((high >> 4) & 3) << 4) - 32
        let q4 = ((byte(ql, l + 32) >> 4) | ((high >> 6) & 3) << 4) - 32
        out[l] = d * Float(sc.load(fromByteOffset: s, as: Int8.self)) * Float(q1)
        out[l + 32] = d * Float(sc.load(fromByteOffset: s + 2, as: Int8.self)) * Float(q2)
        out[l + 64] = d * Float(sc.load(fromByteOffset: s + 4, as: Int8.self)) * Float(q3)
        out[l + 96] = d * Float(sc.load(fromByteOffset: s + 6, as: Int8.self)) * Float(q4)
      }
    }
  }
}
