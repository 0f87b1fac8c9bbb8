// The dtype table and the f32 conversions, against goldens from numpy / ml_dtypes
// (fixtures/make_dtype_goldens.py) and, for F16, exhaustively against the standard library's Float16.

import Foundation
import Testing

@testable import Formats

@Suite struct DTypeTableTests {
  /// The bit facts agree with the conversions (themselves checked against ml_dtypes): for every code of
  /// the 8- and 16-bit floats, zero by the mask iff it widens to ±0, non-finite by the mask iff it widens
  /// to NaN or ±inf; and the smallest normal and spacing are the ones the conversion produces.
  @Test func bitFactsAgreeWithTheConversions() {
    let widen: [(DType, Int, (UInt16) -> Float)] = [
      (.f16, 16, { Float32Conversion.f16ToFloat($0) }), (.bf16, 16, { Float32Conversion.bf16ToFloat($0) }),
      (.f8e4m3, 8, { Float32Conversion.f8e4m3ToFloat(UInt8($0)) }), (.f8e5m2, 8, { Float32Conversion.f8e5m2ToFloat(UInt8($0)) }),
    ]
    for (dtype, bits, decode) in widen {
      guard case .bits(let zero) = dtype.zeroTest, let nf = dtype.nonFiniteMask, let format = dtype.floatFormat, let tiny = dtype.smallestNormal else {
        Issue.record("\(dtype) lacks a fact")
        continue
      }
      for code in 0..<(1 << bits) {
        let c = UInt64(code), x = decode(UInt16(code))
        #expect((c & zero == 0) == (x == 0), "\(dtype) \(code)")
        #expect((c & nf == nf) == !x.isFinite, "\(dtype) \(code)")
        // Spacing: the next code up differs by one ulp of (mantissa bits, min exponent).
        if x.isFinite && x > 0 && code + 1 < (1 << (bits - 1)) {
          let next = decode(UInt16(code + 1))
          if next.isFinite {
            let ulp = Float(sign: .plus, exponent: max(Int(x.exponent), format.minNormalExponent) - format.mantissaBits, significand: 1)
            #expect(next - x == ulp, "\(dtype) \(code)")
          }
        }
      }
      // The smallest normal has exponent field 1 and mantissa 0; the code below it is the largest subnormal.
      #expect(decode(UInt16(1 << format.mantissaBits)) == tiny, "\(dtype)")
      #expect(decode(UInt16((1 << format.mantissaBits) - 1)) < tiny, "\(dtype)")
    }
    #expect(DType.f32.smallestNormal == Float.leastNormalMagnitude && DType.f64.smallestNormal == Float.leastNormalMagnitude)
    #expect(DType.f8e8m0.zeroTest == .never && DType.c64.zeroTest == nil && DType.f4.zeroTest == nil)
    #expect(DType.i32.zeroTest == .bits(mask: 0xFFFF_FFFF) && DType.i32.nonFiniteMask == nil)
    #expect(DType.f8e4m3fnuz.zeroTest == .bits(mask: 0xFF))
  }

  @Test func bitsAndNamesMatchTheSafetensorsTable() {
    let expected: [(String, Int)] = [
      ("BOOL", 8), ("F4", 4), ("F6_E2M3", 6), ("F6_E3M2", 6), ("U8", 8), ("I8", 8), ("F8_E5M2", 8), ("F8_E4M3", 8),
      ("F8_E8M0", 8), ("F8_E4M3FNUZ", 8), ("F8_E5M2FNUZ", 8), ("I16", 16), ("U16", 16), ("F16", 16), ("BF16", 16),
      ("I32", 32), ("U32", 32), ("F32", 32), ("C64", 64), ("F64", 64), ("I64", 64), ("U64", 64),
    ]
    #expect(DType.allCases.map(\.safetensorsName) == expected.map(\.0))
    #expect(DType.allCases.map(\.bits) == expected.map(\.1))
    #expect(DType(safetensorsName: "bf16") == nil)
    #expect(DType(safetensorsName: "float32") == nil)
  }

  @Test func writeOrderIsTheReferenceOrder() throws {
    let manifest = try Fixtures.json("safetensors/manifest.json")
    let order = try #require(manifest["dtype_order_descending"] as? [String])
    let ours = DType.allCases.sorted { $0.writeRank > $1.writeRank }.map(\.rawValue).filter(order.contains)
    #expect(ours == order)
  }

  @Test func byteCountsRejectPartialBytesAndOverflow() {
    #expect(DType.f4.byteCount(elements: 3) == nil)
    #expect(DType.f4.byteCount(elements: 4) == 2)
    #expect(DType.f32.byteCount(elements: Int.max / 2) == nil)
    #expect(DType.bf16.byteCount(elements: 5) == 10)
  }

  @Test func sha256KnownVector() {
    let digest = Array("abc".utf8).withUnsafeBytes { sha256Hex($0) }
    #expect(digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  }
}

@Suite struct DTypeConversionTests {
  static let formats = ["F16", "BF16", "F8_E4M3", "F8_E5M2"]

  static func encoder(_ format: String) -> (Float) -> UInt32 {
    switch format {
    case "F16": return { UInt32(Float32Conversion.floatToF16($0)) }
    case "BF16": return { UInt32(Float32Conversion.floatToBF16($0)) }
    case "F8_E4M3": return { UInt32(Float32Conversion.floatToF8E4M3($0)) }
    default: return { UInt32(Float32Conversion.floatToF8E5M2($0)) }
    }
  }

  static func decoder(_ format: String) -> (UInt32) -> Float {
    switch format {
    case "F16": return { Float32Conversion.f16ToFloat(UInt16($0)) }
    case "BF16": return { Float32Conversion.bf16ToFloat(UInt16($0)) }
    case "F8_E4M3": return { Float32Conversion.f8e4m3ToFloat(UInt8($0)) }
    default: return { Float32Conversion.f8e5m2ToFloat(UInt8($0)) }
    }
  }

  static func isNaNCode(_ format: String, _ code: UInt32) -> Bool { decoder(format)(code).isNaN }

  @Test(arguments: formats)
  func encodeMatchesGoldens(format: String) throws {
    let goldens = try Fixtures.json("dtypes/goldens.json")
    let table = try #require((goldens["encode"] as? [String: Any])?[format] as? [String: Any])
    let inputs = try #require(table["f32"] as? [NSNumber]).map { $0.uint32Value }
    let outputs = try #require(table["out"] as? [NSNumber]).map { $0.uint32Value }
    let labels = try #require(table["labels"] as? [String])
    let encode = Self.encoder(format)
    #expect(inputs.count > 300)
    var mismatches: [String] = []
    for (i, bits) in inputs.enumerated() {
      let x = Float(bitPattern: bits)
      let got = encode(x)
      if x.isNaN {
        if !Self.isNaNCode(format, got) { mismatches.append("\(labels[i]): NaN gave non-NaN \(got)") }
      } else if got != outputs[i] {
        mismatches.append("\(labels[i]) \(x) (0x\(String(bits, radix: 16))): got 0x\(String(got, radix: 16)), want 0x\(String(outputs[i], radix: 16))")
      }
    }
    #expect(mismatches.isEmpty, "\(mismatches.prefix(10))")
  }

  @Test(arguments: formats)
  func decodeMatchesGoldens(format: String) throws {
    let goldens = try Fixtures.json("dtypes/goldens.json")
    let table = try #require((goldens["decode"] as? [String: Any])?[format] as? [String: Any])
    let codes = try #require(table["in"] as? [NSNumber]).map { $0.uint32Value }
    let outputs = try #require(table["f32"] as? [NSNumber]).map { $0.uint32Value }
    let decode = Self.decoder(format)
    if format.hasPrefix("F8") { #expect(codes.count == 256) }
    var mismatches: [String] = []
    for (i, code) in codes.enumerated() {
      let got = decode(code)
      let want = Float(bitPattern: outputs[i])
      if want.isNaN ? !got.isNaN : got.bitPattern != outputs[i] {
        mismatches.append("code 0x\(String(code, radix: 16)): got \(got), want \(want)")
      }
    }
    #expect(mismatches.isEmpty, "\(mismatches.prefix(10))")
  }

  @Test func f16DecodeIsExactForEveryCode() {
    var mismatches = 0
    for code in 0...0xFFFF {
      let want = Float(Float16(bitPattern: UInt16(code)))
      let got = Float32Conversion.f16ToFloat(UInt16(code))
      if want.isNaN ? !got.isNaN : got.bitPattern != want.bitPattern { mismatches += 1 }
    }
    #expect(mismatches == 0)
  }

  @Test func f16EncodeAgreesWithFloat16OnManyValues() {
    var generator = SplitMix64(seed: 7)
    var mismatches: [UInt32] = []
    for _ in 0..<200_000 {
      let bits = UInt32(truncatingIfNeeded: generator.next())
      let x = Float(bitPattern: bits)
      let want = Float16(x).bitPattern
      let got = Float32Conversion.floatToF16(x)
      if x.isNaN ? !Float16(bitPattern: got).isNaN : got != want { mismatches.append(bits) }
    }
    // Every f32 just around each f16 rounding boundary, where ties to even matter.
    for code in UInt16(0)..<0x7C00 {
      let boundary = (Float(Float16(bitPattern: code)) + Float(Float16(bitPattern: code + 1))) / 2
      for bits in [boundary.bitPattern - 1, boundary.bitPattern, boundary.bitPattern + 1] {
        let x = Float(bitPattern: bits)
        if Float32Conversion.floatToF16(x) != Float16(x).bitPattern { mismatches.append(bits) }
      }
    }
    #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
  }

  @Test func specialValues() {
    #expect(Float32Conversion.floatToBF16(1.0) == 0x3F80)
    #expect(Float32Conversion.floatToBF16(3.14159) == 0x4049)
    #expect(Float32Conversion.floatToBF16(.nan) & 0x7FC0 == 0x7FC0)
    #expect(Float32Conversion.floatToF8E4M3(1e9) == 0x7E)  // saturates to 448
    #expect(Float32Conversion.floatToF8E4M3(-.infinity) == 0xFE)
    #expect(Float32Conversion.f8e4m3ToFloat(0x7E) == 448)
    #expect(Float32Conversion.f8e4m3ToFloat(0x7F).isNaN)
    #expect(Float32Conversion.floatToF8E5M2(1e9) == 0x7C)  // infinity
    #expect(Float32Conversion.f8e5m2ToFloat(0x7B) == 57344)
    #expect(Float32Conversion.floatToF16(65520) == 0x7C00)  // the first value that rounds to inf
    #expect(Float32Conversion.floatToF16(65519.996) == 0x7BFF)
    #expect(Float32Conversion.floatToF16(-0.0) == 0x8000)
  }

  /// Every convertible dtype: widen(narrow(x)) is the identity on values the dtype can hold.
  @Test(arguments: [DType.f32, .f64, .f16, .bf16, .f8e4m3, .f8e5m2])
  func bulkRoundTripOfRepresentableValues(dtype: DType) throws {
    var generator = SplitMix64(seed: 11)
    let raw = (0..<1001).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: generator.next())) }
      .map { $0.isFinite ? $0 : 1 }
    // First narrow to make every value representable, then a round trip must be exact.
    let bytesPerElement = dtype.bits / 8
    var stored = [UInt8](repeating: 0, count: raw.count * bytesPerElement)
    try raw.withUnsafeBufferPointer { src in
      try stored.withUnsafeMutableBytes { try Float32Conversion.narrow(dtype, from: src.baseAddress!, to: $0.baseAddress!, count: raw.count) }
    }
    var widened = [Float](repeating: 0, count: raw.count)
    try stored.withUnsafeBytes { src in
      try widened.withUnsafeMutableBufferPointer { try Float32Conversion.widen(dtype, from: src.baseAddress!, to: $0.baseAddress!, count: raw.count) }
    }
    var again = [UInt8](repeating: 0, count: stored.count)
    try widened.withUnsafeBufferPointer { src in
      try again.withUnsafeMutableBytes { try Float32Conversion.narrow(dtype, from: src.baseAddress!, to: $0.baseAddress!, count: raw.count) }
    }
    // NaN codes may differ in payload; compare decoded values, NaN-aware.
    var widenedAgain = [Float](repeating: 0, count: raw.count)
    try again.withUnsafeBytes { src in
      try widenedAgain.withUnsafeMutableBufferPointer { try Float32Conversion.widen(dtype, from: src.baseAddress!, to: $0.baseAddress!, count: raw.count) }
    }
    for i in 0..<raw.count {
      #expect(widened[i].isNaN ? widenedAgain[i].isNaN : widened[i].bitPattern == widenedAgain[i].bitPattern)
    }
  }

  @Test func integerTypesWidenExactly() throws {
    let values: [Int16] = [0, 1, -1, 32767, -32768, 1234]
    let tensor = try Tensor(name: "t", dtype: .i16, shape: [6], data: values.withUnsafeBytes { Array($0) })
    #expect(try tensor.float32() == values.map(Float.init))
    #expect(throws: FormatError.unsupportedConversion(from: .f32, to: .i32)) {
      _ = try tensor.converted(to: .i32)
    }
    let complex = try Tensor(name: "c", dtype: .c64, shape: [1], data: [UInt8](repeating: 0, count: 8))
    #expect(throws: FormatError.unsupportedConversion(from: .c64, to: .f32)) { _ = try complex.float32() }
  }
}

/// A small deterministic generator for test inputs.
struct SplitMix64: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
