// `espalier convert`: any checkpoint in, safetensors (one file or a sharded directory with its side
// files) or HDF5 out, optionally changing the float dtype; safetensors output keeps the source's
// `__metadata__`. Streams one tensor at a time, so memory stays
// at O(largest tensor). A directory output is built under a temporary name and renamed into place.

import Dispatch

#if canImport(Glibc)
  import Glibc
#endif

public struct ConvertOptions: Sendable {
  public enum OutputFormat: String, Sendable { case safetensors, hdf5 }
  /// Target dtype of floating-point tensors; nil keeps each tensor's dtype (integers always keep theirs).
  public var dtype: DType?
  /// Shard budget for directory output (decimal bytes); nil writes one file.
  public var maxShardSize: Int?
  /// Replace an existing output.
  public var overwrite: Bool
  /// Write a compressed sparse checkpoint directory (SparseCheckpointWriter) instead of dense output.
  public var compression: CompressionOptions?

  public init(dtype: DType? = nil, maxShardSize: Int? = 5_000_000_000, overwrite: Bool = false) {
    self.dtype = dtype
    self.maxShardSize = maxShardSize
    self.overwrite = overwrite
  }
}

public struct ConvertReport: Sendable {
  public var input: String
  public var inputKind: String
  public var output: String
  public var outputFormat: ConvertOptions.OutputFormat
  /// The layout of a compressed output (espalier, sparse-bitmask, sparse-24-bitmask), nil when dense.
  public var compressedFormat: String?
  /// What was written, for reports: the layout of a compressed output, else the output format.
  public var outputKind: String { compressedFormat ?? outputFormat.rawValue }
  public var tensors: Int
  public var bytesIn: Int
  public var bytesOut: Int
  /// Files written (relative to the output directory, or the output file itself).
  public var files: [String]
  public var notes: [String]
}

public enum Converter {
  /// How an output path is written: `.h5`/`.hdf5` -> one HDF5 file; `.safetensors` -> one safetensors
  /// file; anything else -> a checkpoint directory (sharded safetensors + config and tokenizer files).
  public static func outputFormat(of path: String) -> (ConvertOptions.OutputFormat, directory: Bool) {
    if path.hasSuffix(".h5") || path.hasSuffix(".hdf5") { return (.hdf5, false) }
    if path.hasSuffix(".safetensors") { return (.safetensors, false) }
    return (.safetensors, true)
  }

  public static func convert(
    input: String, output: String, options: ConvertOptions,
    progress: ((_ done: Int, _ total: Int) -> Void)? = nil
  ) throws(FormatError) -> ConvertReport {
    let reader = try Checkpoint.open(input)
    let (format, isDirectory) = outputFormat(of: output)
    try OutputPath.claim(output, overwrite: options.overwrite, inputs: [input])
    var done = 0
    let total = reader.infos.count
    var sources = reader.sources.map { source -> TensorSource in
      var s = source
      let target = targetType(source.info.dtype, options.dtype)
      s.info.dtype = target
      s.load = {
        let tensor = try source.load()
        return tensor.dtype == target ? tensor : try tensor.converted(to: target)
      }
      s.release = {
        source.release?()
        done += 1
        progress?(done, total)
      }
      return s
    }
    if reader is SparseCheckpoint || reader is GGUFCheckpoint { sources = Prefetch.ahead(sources) }
    var sideFiles = try reader.sideFiles()
    if let dtype = options.dtype { sideFiles = try settingTorchDtype(sideFiles, dtype) }
    var files: [String]
    if let compression = options.compression {
      guard isDirectory else {
        throw .io(file: output, reason: "a compressed checkpoint is a directory; name one without .safetensors/.h5")
      }
      files = try SparseCheckpointWriter.write(
        sources, sideFiles: sideFiles, to: output, maxShardSize: options.maxShardSize, options: compression,
        sourceMetadata: reader.metadata)
    } else if isDirectory {
      files = try writeDirectory(sources, sideFiles: sideFiles, to: output, options: options, metadata: reader.metadataForCopy)
    } else {
      let temporary = output + ".partial-\(getpid())"
      do throws(FormatError) {
        if format == .hdf5 {
          try HDF5Writer.write(sources, to: temporary)
        } else {
          try SafetensorsWriter.write(sources, to: temporary, metadata: reader.metadataForCopy)
        }
        try AtomicDirectory.replace(output, with: temporary)
      } catch {
        unlink(temporary)
        throw error
      }
      files = [output]
    }
    var notes: [String] = []
    if let gguf = reader as? GGUFCheckpoint { notes += gguf.notes }
    if let hdf5 = reader as? HDF5Checkpoint { notes += hdf5.notes }
    if !isDirectory && !sideFiles.isEmpty {
      notes.append("single-file output: \(sideFiles.map(\.name).joined(separator: ", ")) not written (give a directory to keep them)")
    }
    let bytesIn = reader.infos.reduce(0) { $0 + ($1.byteCount ?? 0) }
    var bytesOut = sources.reduce(0) { $0 + ($1.info.byteCount ?? 0) }
    if options.compression != nil {  // what the tensor files take on disk, headers included
      bytesOut = files.filter { $0.hasSuffix(".safetensors") }.reduce(0) { $0 + FileSystem.size(output + "/" + $1) }
    }
    return ConvertReport(
      input: input, inputKind: kindName(reader), output: output, outputFormat: format,
      compressedFormat: options.compression?.format.rawValue, tensors: total, bytesIn: bytesIn, bytesOut: bytesOut, files: files, notes: notes)
  }

  /// config.json's torch_dtype follows a --dtype change (transformers reads it as the load dtype, and
  /// verify checks the tensors against it).
  static func settingTorchDtype(_ sides: [SideFile], _ dtype: DType) throws(FormatError) -> [SideFile] {
    let names: [DType: String] = [.f32: "float32", .f16: "float16", .bf16: "bfloat16"]
    guard let name = names[dtype], let i = sides.firstIndex(where: { $0.name == "config.json" }) else { return sides }
    var result = sides
    result[i] = try sides[i].editingJSON { root in
      for key in ["torch_dtype", "dtype"] where root[key] != nil { root[key] = .string(name) }
    }
    return result
  }

  static func targetType(_ dtype: DType, _ requested: DType?) -> DType {
    guard let requested, dtype.isFloatingPoint, dtype.convertsToFloat32 else { return dtype }
    return requested
  }

  static func kindName(_ reader: any CheckpointReader) -> String {
    switch reader {
    case is GGUFCheckpoint: return "gguf"
    case is HDF5Checkpoint: return "hdf5"
    case let sparse as SparseCheckpoint: return sparse.format.rawValue
    default: return "safetensors"
    }
  }

  /// Builds a checkpoint directory under a temporary name beside it (sharded safetensors, then the side
  /// files), then renames it into place, replacing what is there.
  public static func writeDirectory(
    _ sources: [TensorSource], sideFiles: [SideFile], to output: String, options: ConvertOptions,
    metadata: [String: String]? = SafetensorsWriter.defaultMetadata
  ) throws(FormatError) -> [String] {
    try AtomicDirectory.build(output) { (temporary) throws(FormatError) in
      var files = try SafetensorsCheckpoint.write(sources, toDirectory: temporary, maxShardSize: options.maxShardSize, metadata: metadata)
      for side in sideFiles {
        try side.write(into: temporary)
        files.append(side.name)
      }
      return files
    }
  }
}

/// A directory written complete or not at all: built under a temporary name beside it, then renamed into
/// place (replacing what is there; callers check their --overwrite first).
public enum AtomicDirectory {
  public static func build<R>(_ output: String, _ body: (String) throws(FormatError) -> R) throws(FormatError) -> R {
    let trimmed = output.hasSuffix("/") ? String(output.dropLast()) : output
    let temporary = trimmed + ".partial-\(getpid())"
    FileSystem.removeTree(temporary)
    guard mkdir(temporary, 0o755) == 0 else { throw .io(file: temporary, reason: "cannot create: \(systemErrorText())") }
    do throws(FormatError) {
      let result = try body(temporary)
      try replace(trimmed, with: temporary)
      return result
    } catch {
      FileSystem.removeTree(temporary)
      throw error
    }
  }

  /// `build` for a body that throws its own error type (an engine tool that writes while it computes);
  /// the directory's own failures are mapped through `mapping`.
  public static func build<R, E: Error>(
    _ output: String, mapping: (FormatError) -> E, _ body: (String) throws(E) -> R
  ) throws(E) -> R {
    let trimmed = output.hasSuffix("/") ? String(output.dropLast()) : output
    let temporary = trimmed + ".partial-\(getpid())"
    FileSystem.removeTree(temporary)
    guard mkdir(temporary, 0o755) == 0 else { throw mapping(.io(file: temporary, reason: "cannot create: \(systemErrorText())")) }
    do throws(E) {
      let result = try body(temporary)
      do { try replace(trimmed, with: temporary) } catch { throw mapping(error) }
      return result
    } catch {
      FileSystem.removeTree(temporary)
      throw error
    }
  }

  /// Moves `temporary` to `path`, replacing what is there (the caller checked --overwrite).
  static func replace(_ path: String, with temporary: String) throws(FormatError) {
    var info = stat()
    if lstat(path, &info) == 0 {
      let kind = info.st_mode & S_IFMT
      guard kind == S_IFREG || kind == S_IFDIR else {
        throw .io(file: path, reason: "is no longer a regular file or directory; not replaced (OutputPath)")
      }
      let old = path + ".old-\(getpid())"
      guard rename(path, old) == 0 else { throw .io(file: path, reason: "cannot move the old output aside: \(systemErrorText())") }
      guard rename(temporary, path) == 0 else {
        _ = rename(old, path)
        throw .io(file: path, reason: "cannot rename into place: \(systemErrorText())")
      }
      FileSystem.removeTree(old)
    } else {
      guard errno == ENOENT else { throw .io(file: path, reason: "cannot inspect the output path: \(systemErrorText())") }
      guard rename(temporary, path) == 0 else { throw .io(file: path, reason: "cannot rename into place: \(systemErrorText())") }
    }
  }
}

/// Decoding the next tensor on another thread while the current one is written: for readers whose
/// tensors are computed (compressed checkpoints, GGUF dequantisation), not mapped. Both closures run on
/// the writer's thread; at most one tensor is decoded ahead.
enum Prefetch {
  final class Pending: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<Tensor, any Error>?
    init(_ load: @escaping () throws -> Tensor) {
      nonisolated(unsafe) let load = load
      DispatchQueue.global().async {
        self.result = Result { try load() }
        self.done.signal()
      }
    }
    func wait() throws -> Tensor {
      done.wait()
      return try result!.get()
    }
  }

  static func ahead(_ sources: [TensorSource]) -> [TensorSource] {
    final class Slot { var pending: Pending? }
    return sources.map { source in
      let slot = Slot()
      var s = source
      s.prefetch = { if slot.pending == nil { slot.pending = Pending(source.load) } }
      s.load = {
        guard let pending = slot.pending else { return try source.load() }
        slot.pending = nil
        return try pending.wait()
      }
      return s
    }
  }
}
