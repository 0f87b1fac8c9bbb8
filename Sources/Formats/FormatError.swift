// The one error enum of the Formats module. Every case names the file and, where there is one, the
// tensor, so a user can find the problem without a debugger. Safetensors cases mirror the reference
// reader's `SafeTensorError` variants one for one (formats.md §1.3), so tests can assert exact errors.

public enum FormatError: Error, Equatable, Sendable, CustomStringConvertible {
  // safetensors, in the order the reference reader checks them
  case headerTooSmall(file: String)
  case headerTooLarge(file: String)
  case invalidHeaderLength(file: String)
  case invalidHeader(file: String)
  case invalidHeaderDeserialization(file: String, reason: String)
  case duplicateKey(file: String, key: String)
  case invalidOffset(file: String, tensor: String)
  case validationOverflow(file: String, tensor: String)
  case misalignedSlice(file: String, tensor: String)
  case tensorInvalidInfo(file: String, tensor: String)
  case metadataIncompleteBuffer(file: String)
  case invalidTensorView(dtype: DType, shape: [Int], byteCount: Int)
  case tensorNotFound(file: String, tensor: String)

  /// A sharded checkpoint whose index (model.safetensors.index.json) and shards do not fit together.
  case shards(index: String, problem: ShardProblem)
  /// The path is none of the layouts Espalier reads.
  case notACheckpoint(path: String, reason: String)
  /// A size (--max-shard-size, --max-memory) that does not parse.
  case invalidSize(text: String)

  // GGUF (its bytes break the format, a ggml type without a dequantiser, Q/K rows that do not split
  // into heads, an architecture outside the Llama family, a metadata key the conversion needs) and
  // HDF5 (libhdf5 refused, or the file is not a layout Espalier reads).
  case gguf(file: String, problem: GGUFProblem)
  case unsupportedGGMLType(file: String, tensor: String, type: String)
  case invalidPermutation(rows: Int, heads: Int)
  case unsupportedArchitecture(file: String, architecture: String)
  /// config.json names a model_type the engine does not run.
  case unsupportedModelType(file: String, modelType: String, supported: [String])
  case missingMetadata(file: String, key: String)
  case hdf5(file: String, reason: String)

  // A stored tensor of a compressed sparse checkpoint that does not decode (corrupt frame, checksum,
  // mask); a dtype conversion that does not exist; I/O.
  case compressed(file: String, tensor: String, reason: String)
  case unsupportedConversion(from: DType, to: DType)
  case io(file: String, reason: String)
  /// Several problems found by a loader that collects them all before failing.
  case many([FormatError])

  public var description: String {
    switch self {
    case .headerTooSmall(let f): return "\(f): header too small (a safetensors file starts with an 8-byte header length)"
    case .headerTooLarge(let f): return "\(f): header too large (over 100,000,000 bytes)"
    case .invalidHeaderLength(let f): return "\(f): invalid header length (it runs past the end of the file)"
    case .invalidHeader(let f): return "\(f): invalid header (not valid UTF-8)"
    case .invalidHeaderDeserialization(let f, let r): return "\(f): invalid header JSON: \(r)"
    case .duplicateKey(let f, let k): return "\(f): duplicate key `\(k)` in the header"
    case .invalidOffset(let f, let t): return "\(f): invalid offset for tensor `\(t)` (data must be contiguous from 0)"
    case .validationOverflow(let f, let t):
      return "\(f): overflow computing buffer size from shape and/or element type for tensor `\(t)`"
    case .misalignedSlice(let f, let t): return "\(f): tensor `\(t)` does not fill a whole number of bytes"
    case .tensorInvalidInfo(let f, let t): return "\(f): invalid shape, data type, or offset for tensor `\(t)`"
    case .metadataIncompleteBuffer(let f): return "\(f): incomplete metadata, file not fully covered"
    case .invalidTensorView(let d, let s, let n): return "invalid tensor view: \(d) \(s) does not fit \(n) bytes"
    case .tensorNotFound(let f, let t): return "\(f): no tensor named `\(t)`"
    case .shards(let i, let p): return "\(i): \(p)"
    case .notACheckpoint(let p, let r): return "\(p): not a checkpoint: \(r)"
    case .invalidSize(let t): return "invalid size `\(t)` (expected e.g. 5GB, 500MB, 2GiB or a byte count)"
    case .gguf(let f, let p): return "\(f): \(p)"
    case .unsupportedGGMLType(let f, let t, let type):
      return "\(f): tensor `\(t)` has ggml type \(type), which cannot be dequantised here "
        + "(supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K)"
    case .hdf5(let f, let r): return "\(f): \(r)"
    case .invalidPermutation(let r, let h): return "cannot undo the Q/K permutation: \(r) rows do not split into \(h) heads of even size"
    case .unsupportedArchitecture(let f, let a):
      return "\(f): architecture `\(a)` is not supported (Llama-family GGUF files use `llama`)"
    case .unsupportedModelType(let f, let t, let supported):
      return "\(f): model_type `\(t)` is not supported (supported: \(supported.joined(separator: ", ")))"
    case .missingMetadata(let f, let k): return "\(f): metadata key `\(k)` is missing"
    case .compressed(let f, let t, let r): return "\(f): tensor `\(t)`: \(r)"
    case .unsupportedConversion(let a, let b): return "conversion from \(a) to \(b) is not supported"
    case .io(let f, let r): return "\(f): \(r)"
    case .many(let errors): return errors.map(\.description).joined(separator: "\n")
    }
  }
}

/// What is wrong between a shard index and its shards.
public enum ShardProblem: Equatable, Sendable, CustomStringConvertible {
  /// The index is not a valid index.
  case invalidIndex(String)
  /// A shard the index names does not exist.
  case missingShard(String)
  /// Two shards hold a tensor of the same name.
  case duplicateTensor(String, first: String, second: String)
  /// The index's weight_map and the shards' headers disagree.
  case mismatch(String)

  public var description: String {
    switch self {
    case .invalidIndex(let r): return "invalid shard index: \(r)"
    case .missingShard(let s): return "shard `\(s)` is missing"
    case .duplicateTensor(let t, let a, let b): return "tensor `\(t)` appears in both \(a) and \(b)"
    case .mismatch(let r): return r
    }
  }
}
