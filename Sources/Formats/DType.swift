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
