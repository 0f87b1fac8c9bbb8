// The one dtype table of the project: every element type a checkpoint can hold, with its size in bits, its
// safetensors name and its rank in the safetensors write order. Conversions to and from f32 live in
// DTypeConversion.swift; this file only describes types.
//
// Sizes are in bits because F4/F6 are sub-byte (safetensors `Dtype::bitsize`). The case order below is
// the safetensors enum order (formats.md §1.2); the reference serializer sorts tensors by it, descending,
// so every tensor stays aligned to its element size.

#if _endian(big)
  #error("Espalier reads and writes little-endian data in place; big-endian hosts are not supported.")
#endif

public enum DType: String, CaseIterable, Sendable, Hashable, CustomStringConvertible {
  case bool = "BOOL"
  case f4 = "F4"
  case f6e2m3 = "F6_E2M3"
  case f6e3m2 = "F6_E3M2"
  case u8 = "U8"
  case i8 = "I8"
  case f8e5m2 = "F8_E5M2"
  case f8e4m3 = "F8_E4M3"
  case f8e8m0 = "F8_E8M0"
  case f8e4m3fnuz = "F8_E4M3FNUZ"
  case f8e5m2fnuz = "F8_E5M2FNUZ"
  case i16 = "I16"
  case u16 = "U16"
  case f16 = "F16"
  case bf16 = "BF16"
  case i32 = "I32"
  case u32 = "U32"
  case f32 = "F32"
  case c64 = "C64"
  case f64 = "F64"
  case i64 = "I64"
  case u64 = "U64"

  /// The safetensors JSON name (case-sensitive), e.g. "BF16".
  public var safetensorsName: String { rawValue }

  /// Parses a safetensors dtype name exactly (no case folding: "bf16" and "float32" are errors upstream too).
  public init?(safetensorsName: String) { self.init(rawValue: safetensorsName) }

  public var description: String { rawValue }

  /// Bits per element.
  public var bits: Int {
    switch self {
    case .f4: return 4
    case .f6e2m3, .f6e3m2: return 6
    case .bool, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz: return 8
    case .i16, .u16, .f16, .bf16: return 16
    case .i32, .u32, .f32: return 32
    case .c64, .f64, .i64, .u64: return 64
    }
  }

  /// Position in the safetensors enum; the writer orders tensors by this, descending.
  public var writeRank: Int { DType.allCases.firstIndex(of: self)! }

  /// Whether the type is a floating-point type (zero is tested ignoring the sign bit).
  public var isFloatingPoint: Bool {
    switch self {
    case .bool, .u8, .i8, .i16, .u16, .i32, .u32, .i64, .u64: return false
    default: return true
    }
  }

  /// Whether DTypeConversion can widen this type to f32 (and narrow f32 back to it).
  /// Sub-byte floats, complex, E8M0 and the FNUZ variants are carried as bytes only.
  public var convertsToFloat32: Bool {
    switch self {
    case .f4, .f6e2m3, .f6e3m2, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz, .c64: return false
    default: return true
    }
  }

  /// Bytes for `count` elements, or nil when the product overflows or is not a whole number of bytes.
  public func byteCount(elements count: Int) -> Int? {
    let (bitsTotal, overflow) = count.multipliedReportingOverflow(by: bits)
    guard !overflow, bitsTotal % 8 == 0 else { return nil }
    return bitsTotal / 8
  }

  /// The float types config.json's torch_dtype names ("float32", "float16", "bfloat16", "float64").
  public init?(torchName: String) {
    switch torchName {
    case "float32": self = .f32
    case "float16": self = .f16
    case "bfloat16": self = .bf16
    case "float64": self = .f64
    default: return nil
    }
  }

  /// The dtypes a user may name on the command line for outputs (`--dtype f32|f16|bf16`).
  public init?(userName: String) {
    switch userName.lowercased() {
    case "f32", "float32", "float": self = .f32
    case "f16", "float16", "half": self = .f16
    case "bf16", "bfloat16": self = .bf16
    case "f64", "float64", "double": self = .f64
    default:
      guard let parsed = DType(rawValue: userName.uppercased()) else { return nil }
      self = parsed
    }
  }
}

// MARK: - Facts about stored bits: zero, non-finite values, spacing

extension DType {
  /// How a stored element is recognised as zero: every bit of `mask` clear (floats leave out the sign bit,
  /// so -0.0 is zero; the FNUZ floats have the single zero 0x00, their 0x80 is NaN). `nil` for types
  /// whose zero is not read bit by bit here (sub-byte, complex); E8M0 (a power of two) has no zero: `.never`.
  public enum ZeroTest: Equatable, Sendable {
    case bits(mask: UInt64)
    case never
  }

  public var zeroTest: ZeroTest? {
    switch self {
    case .f32: return .bits(mask: 0x7FFF_FFFF)
    case .f64: return .bits(mask: 0x7FFF_FFFF_FFFF_FFFF)
    case .f16, .bf16: return .bits(mask: 0x7FFF)
    case .f8e4m3, .f8e5m2: return .bits(mask: 0x7F)
    case .f8e4m3fnuz, .f8e5m2fnuz, .bool, .u8, .i8: return .bits(mask: 0xFF)
    case .i16, .u16: return .bits(mask: 0xFFFF)
    case .i32, .u32: return .bits(mask: 0xFFFF_FFFF)
    case .i64, .u64: return .bits(mask: .max)
    case .f8e8m0: return .never
    case .f4, .f6e2m3, .f6e3m2, .c64: return nil
    }
  }

  /// The bits that are all set in a NaN or an infinity (the exponent field; E4M3 has no infinity and one
  /// NaN pattern per sign, 0x7F). `nil` for types this test does not cover (integers, FNUZ, sub-byte).
  public var nonFiniteMask: UInt64? {
    switch self {
    case .f32: return 0x7F80_0000
    case .f64: return 0x7FF0_0000_0000_0000
    case .f16: return 0x7C00
    case .bf16: return 0x7F80
    case .f8e4m3: return 0x7F
    case .f8e5m2: return 0x7C
    default: return nil
    }
  }

  /// Explicit mantissa bits and the exponent of the smallest normal number, for the floats whose values
  /// Espalier rounds to (f32 and the storage types narrowed from it).
  public var floatFormat: (mantissaBits: Int, minNormalExponent: Int)? {
    switch self {
    case .f32: return (23, -126)
    case .f64: return (52, -1022)
    case .bf16: return (7, -126)
    case .f16: return (10, -14)
    case .f8e4m3: return (3, -6)
    case .f8e5m2: return (2, -14)
    default: return nil
    }
  }

  /// The smallest positive normal number of a float storage type, as f32 (f64's is below f32's range,
  /// so it gives f32's); nil for types without `floatFormat`.
  public var smallestNormal: Float? {
    guard let format = floatFormat else { return nil }
    return Float(sign: .plus, exponent: max(format.minNormalExponent, -126), significand: 1)
  }
}

// MARK: - ggml tensor types (GGUF)

/// A ggml tensor type: an element type or a block-quantised format. Ids are ggml's and never renumbered
/// (formats.md §4.3); removed ids (4, 5, 31–33, 36–38) have no entry, so readers reject them.
public struct GGMLType: Hashable, Sendable, CustomStringConvertible {
  public let id: UInt32
  public let name: String
  /// Elements per block (1 for plain element types).
  public let blockSize: Int
  /// Bytes per block.
  public let typeSize: Int

  public var description: String { name }

  /// The plain element type this ggml type stores, if it is not quantised.
  public var elementType: DType? {
    switch id {
    case 0: return .f32
    case 1: return .f16
    case 24: return .i8
    case 25: return .i16
    case 26: return .i32
    case 27: return .i64
    case 28: return .f64
    case 30: return .bf16
    default: return nil
    }
  }

  /// Bytes of a row of `ne0` elements, or nil when `ne0` is not a whole number of blocks or the size overflows.
  public func rowBytes(_ ne0: Int) -> Int? {
    guard ne0 >= 0, ne0 % blockSize == 0 else { return nil }
    let (bytes, overflow) = (ne0 / blockSize).multipliedReportingOverflow(by: typeSize)
    return overflow ? nil : bytes
  }

  public init?(id: UInt32) {
    guard let entry = GGMLType.table.first(where: { $0.id == id }) else { return nil }
    self = entry
  }

  private init(_ id: UInt32, _ name: String, _ blockSize: Int, _ typeSize: Int) {
    self.id = id
    self.name = name
    self.blockSize = blockSize
    self.typeSize = typeSize
  }

  public static let f32 = GGMLType(0, "F32", 1, 4)
  public static let f16 = GGMLType(1, "F16", 1, 2)
  public static let q4_0 = GGMLType(2, "Q4_0", 32, 18)
  public static let q4_1 = GGMLType(3, "Q4_1", 32, 20)
  public static let q8_0 = GGMLType(8, "Q8_0", 32, 34)
  public static let q4_K = GGMLType(12, "Q4_K", 256, 144)
  public static let q6_K = GGMLType(14, "Q6_K", 256, 210)
  public static let bf16 = GGMLType(30, "BF16", 1, 2)

  /// Every id with known sizes: gguf-py 0.19.0's GGML_QUANT_SIZES (fixtures/gguf/ggml_quant_sizes.json
  /// is checked against this table). Q2_0 (42) is too new to be listed there, so it reads as unknown.
  public static let table: [GGMLType] = [
    f32, f16, q4_0, q4_1,
    GGMLType(6, "Q5_0", 32, 22), GGMLType(7, "Q5_1", 32, 24), q8_0, GGMLType(9, "Q8_1", 32, 40),
    GGMLType(10, "Q2_K", 256, 84), GGMLType(11, "Q3_K", 256, 110), q4_K, GGMLType(13, "Q5_K", 256, 176),
    q6_K, GGMLType(15, "Q8_K", 256, 292), GGMLType(16, "IQ2_XXS", 256, 66), GGMLType(17, "IQ2_XS", 256, 74),
    GGMLType(18, "IQ3_XXS", 256, 98), GGMLType(19, "IQ1_S", 256, 50), GGMLType(20, "IQ4_NL", 32, 18),
    GGMLType(21, "IQ3_S", 256, 110), GGMLType(22, "IQ2_S", 256, 82), GGMLType(23, "IQ4_XS", 256, 136),
    GGMLType(24, "I8", 1, 1), GGMLType(25, "I16", 1, 2), GGMLType(26, "I32", 1, 4), GGMLType(27, "I64", 1, 8),
    GGMLType(28, "F64", 1, 8), GGMLType(29, "IQ1_M", 256, 56), bf16, GGMLType(34, "TQ1_0", 256, 54),
    GGMLType(35, "TQ2_0", 256, 66), GGMLType(39, "MXFP4", 32, 17), GGMLType(40, "NVFP4", 64, 36),
    GGMLType(41, "Q1_0", 128, 18),
  ]
}
