// espalier-convert's --dtype: the float dtypes every output takes, and the ggml block types a .gguf
// output also takes.

import ArgumentParser
import Formats
import ToolSupport

enum ConvertDType: String, CaseIterable, ExpressibleByArgument {
  case keep, f32, f16, bf16, q8_0, q4_0, q6_k

  /// Also accepts torch's names (float32, float16, bfloat16, half) and upper case (Q8_0).
  init?(argument: String) {
    if let named = ConvertDType(rawValue: argument.lowercased()) {
      self = named
    } else if let plain = OutputDType(argument: argument), let named = ConvertDType(rawValue: plain.rawValue) {
      self = named
    } else {
      return nil
    }
  }

  /// The float dtype of a safetensors or HDF5 output (nil: keep each tensor's).
  var dtype: DType? { OutputDType(rawValue: rawValue)?.dtype }

  /// The type of a GGUF output's 2-D weights (keep: F32, the converter's default).
  var ggmlType: GGMLType {
    switch self {
    case .keep, .f32: return .f32
    case .f16: return .f16
    case .bf16: return .bf16
    case .q8_0: return .q8_0
    case .q4_0: return .q4_0
    case .q6_k: return .q6_K
    }
  }
}
