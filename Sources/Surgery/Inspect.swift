// What `espalier inspect` reports about a checkpoint (safetensors, GGUF or HDF5): tensors, sizes, exact-zero sparsity and N:M
// conformance. Streams tensor by tensor and releases each tensor's pages when done, so resident
// memory stays at O(largest tensor) however large the checkpoint.

import Formats

public struct TensorReport: Equatable, Sendable {
  public var info: TensorInfo
  public var file: String
  public var bytes: Int
  /// Nil when data was not read or the dtype has no bit-level zero test.
  public var sparsity: SparsityStats?
  /// Nil when no pattern was asked for, or the tensor has rank < 2.
  public var pattern: PatternStats?
}

public struct CheckpointReport: Equatable, Sendable {
  public var path: String
  public var files: [String]
  public var tensors: [TensorReport]
  public var pattern: NMPattern?
  /// For a compressed sparse checkpoint: its layout and the bytes its tensor files take on disk.
  public var compressed: (format: String, storedBytes: Int)?

  public static func == (a: CheckpointReport, b: CheckpointReport) -> Bool {
    a.path == b.path && a.files == b.files && a.tensors == b.tensors && a.pattern == b.pattern
      && a.compressed?.format == b.compressed?.format && a.compressed?.storedBytes == b.compressed?.storedBytes
  }

  public var totalBytes: Int { tensors.reduce(0) { $0 + $1.bytes } }
  public var totalElements: Int { tensors.reduce(0) { $0 + ($1.info.elementCount ?? 0) } }
  /// Zeros over all tensors whose zeros could be counted.
  public var globalSparsity: SparsityStats {
    tensors.compactMap(\.sparsity).reduce(SparsityStats(elements: 0, zeros: 0)) {
      SparsityStats(elements: $0.elements + $1.elements, zeros: $0.zeros + $1.zeros)
    }
  }
  /// Tensors checked against the pattern, and how many conform.
  public var patternSummary: (checked: Int, conforming: Int) {
    let checked = tensors.compactMap(\.pattern)
    return (checked.count, checked.filter(\.conforms).count)
  }
}

public enum Inspector {
  /// Builds the report. With `readData` false only headers are read (no sparsity, no pattern).
  /// GGUF tensors are reported as they are read (dequantised to f32, HF names).
  public static func inspect(
    _ checkpoint: any CheckpointReader, pattern: NMPattern?, readData: Bool = true,
    progress: ((_ done: Int, _ total: Int) -> Void)? = nil
  ) throws(FormatError) -> CheckpointReport {
    var reports: [TensorReport] = []
    let infos = checkpoint.infos
    reports.reserveCapacity(infos.count)
    for (i, info) in infos.enumerated() {
      var report = TensorReport(
        info: info, file: checkpoint.file(of: info.name), bytes: info.byteCount ?? 0, sparsity: nil, pattern: nil)
      if readData {
        let tensor = try checkpoint.tensor(info.name)
        report.sparsity = Sparsity.count(tensor)
        if let pattern { report.pattern = Sparsity.check(tensor, pattern: pattern) }
        checkpoint.release(info.name)
      }
      reports.append(report)
      progress?(i + 1, infos.count)
    }
    var report = CheckpointReport(path: checkpoint.path, files: checkpoint.files, tensors: reports, pattern: pattern)
    if let sparse = checkpoint as? SparseCheckpoint {
      report.compressed = (sparse.format.rawValue, sparse.files.reduce(0) { $0 + FileSystem.size($1) })
    }
    return report
  }
}
