// Typed command-line values: every enum a flag takes is parsed by the argument parser itself, so
// `--help` lists the allowed values and a wrong one is refused with exit 64 before any work starts.

import ArgumentParser
import Formats
import Surgery

extension PruneMethod: ExpressibleByArgument {}
extension AdapterMethod: ExpressibleByArgument {}
extension ScaleRule: ExpressibleByArgument {}
extension LoRSGradient: ExpressibleByArgument {}
extension AdapterInit: ExpressibleByArgument {}
extension SparseFormat: ExpressibleByArgument {}

/// `--pattern N:M`: N zeros in every group of M input columns.
extension NMPattern: ExpressibleByArgument {
  public init?(argument: String) { try? self.init(parsing: argument) }
  public var defaultValueDescription: String { description }
}

/// The float dtype of an output: one of the three training dtypes, or the input's own.
public enum OutputDType: String, CaseIterable, Sendable, ExpressibleByArgument {
  case keep, f32, f16, bf16

  /// Also accepts torch's names (float32, float16, bfloat16, half).
  public init?(argument: String) {
    if let named = OutputDType(rawValue: argument.lowercased()) {
      self = named
    } else if let dtype = DType(userName: argument), let named = OutputDType(rawValue: dtype.rawValue.lowercased()) {
      self = named
    } else {
      return nil
    }
  }

  /// nil for `keep`.
  public var dtype: DType? {
    switch self {
    case .keep: return nil
    case .f32: return .f32
    case .f16: return .f16
    case .bf16: return .bf16
    }
  }
}

/// A size in bytes: decimal units (5GB = 5e9 bytes), binary units (GiB) or a plain count.
public struct ByteCount: ExpressibleByArgument, Sendable, CustomStringConvertible {
  public let bytes: Int
  public let text: String

  public init?(argument: String) {
    guard let bytes = try? ByteSize.parse(argument) else { return nil }
    self.bytes = bytes
    text = argument
  }

  public var description: String { text }
  public var defaultValueDescription: String { text }
}
