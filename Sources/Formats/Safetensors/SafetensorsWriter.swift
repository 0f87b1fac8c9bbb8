// safetensors: a streaming writer whose bytes equal the reference serializer's (formats.md §1.4).
//
// Order: dtype descending in the safetensors enum order, then name ascending by bytes, which keeps every
// tensor aligned to its element size. Header: compact JSON, `__metadata__` first, entry keys in the
// order dtype, shape, data_offsets, padded with spaces so that N % 8 == 0. Tensors are produced one at a
// time by the caller, so writing holds O(largest tensor) memory; the file appears only when complete.

/// A tensor to be written: its header facts now, its bytes when the writer asks for them.
public struct TensorSource: @unchecked Sendable {
  public var info: TensorInfo
  public var load: () throws -> Tensor
  /// Called once the tensor has been written, so a streaming source can drop its pages.
  public var release: (() -> Void)?
  /// Called when this tensor is the next to be written, so a source that decodes (compressed, GGUF) can
  /// start while the current one is being written.
  public var prefetch: (() -> Void)?

  public init(info: TensorInfo, load: @escaping () throws -> Tensor, release: (() -> Void)? = nil) {
    self.info = info
    self.load = load
    self.release = release
  }

  /// A source for a tensor already in memory (or mapped).
  public init(_ tensor: Tensor) {
    info = tensor.info
    load = { tensor }
  }
}

public enum SafetensorsWriter {
  /// The metadata HF writers put in every file; transformers refuses files without a known format.
  public static let defaultMetadata = ["format": "pt"]

  /// Sorts tensor infos into the reference buffer order.
  public static func bufferOrder(_ infos: [TensorInfo]) -> [TensorInfo] {
    infos.sorted {
      if $0.dtype != $1.dtype { return $0.dtype.writeRank > $1.dtype.writeRank }
      return $0.name.utf8.lexicographicallyPrecedes($1.name.utf8)
    }
  }

  /// The header bytes (JSON plus space padding, without the 8-byte length) for tensors in buffer order.
  /// Metadata keys are written sorted, so the output is deterministic.
  public static func header(
    for ordered: [TensorInfo], metadata: [String: String]?, file: String
  ) throws(FormatError) -> [UInt8] {
    var json = "{"
    var first = true
    if let metadata {
      json += "\"__metadata__\":{"
      json += metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        .map { JSONWriter.compactString($0) + ":" + JSONWriter.compactString(metadata[$0]!) }
        .joined(separator: ",")
      json += "}"
      first = false
    }
    var offset = 0
    var seen = Set<String>()
    for info in ordered {
      guard seen.insert(info.name).inserted else { throw .duplicateKey(file: file, key: info.name) }
      guard info.name != "__metadata__" else {
        throw .invalidHeaderDeserialization(file: file, reason: "`__metadata__` is reserved and cannot name a tensor")
      }
      guard let size = info.byteCount else {
        throw info.elementCount == nil
          ? .validationOverflow(file: file, tensor: info.name) : .misalignedSlice(file: file, tensor: info.name)
      }
      if !first { json += "," }
      first = false
      json += JSONWriter.compactString(info.name) + ":"
      json += "{\"dtype\":\"\(info.dtype.safetensorsName)\",\"shape\":["
      json += info.shape.map(String.init).joined(separator: ",")
      json += "],\"data_offsets\":[\(offset),\(offset + size)]}"
      offset += size
    }
    json += "}"
    var bytes = Array(json.utf8)
    let padding = (8 - bytes.count % 8) % 8
    bytes.append(contentsOf: repeatElement(0x20, count: padding))
    guard bytes.count <= Safetensors.maxHeaderLength else { throw .headerTooLarge(file: file) }
    return bytes
  }

  /// Writes `sources` to `path` atomically. Each source is loaded once, in buffer order, and must match
  /// the dtype and shape it announced.
  public static func write(
    _ sources: [TensorSource], to path: String, metadata: [String: String]? = defaultMetadata
  ) throws(FormatError) {
    let ordered = bufferOrder(sources.map(\.info))
    var byName: [String: TensorSource] = [:]
    for s in sources { byName[s.info.name] = s }
    let header = try header(for: ordered, metadata: metadata, file: path)
    let file = try AtomicFile(path: path)
    do throws(FormatError) {
      var length = UInt64(header.count).littleEndian
      try withUnsafeBytes(of: &length) { (b) throws(FormatError) in try file.write(b) }
      try file.write(header)
      for (i, info) in ordered.enumerated() {
        let tensor: Tensor
        if i + 1 < ordered.count { byName[ordered[i + 1].name]!.prefetch?() }
        do { tensor = try byName[info.name]!.load() } catch let e as FormatError { throw e } catch {
          throw FormatError.io(file: path, reason: "tensor `\(info.name)`: \(error)")
        }
        guard tensor.dtype == info.dtype, tensor.shape == info.shape else {
          throw FormatError.tensorInvalidInfo(file: path, tensor: info.name)
        }
        try tensor.withUnsafeBytes { (b) throws(FormatError) in try file.write(b) }
        byName[info.name]!.release?()
      }
      try file.commit()
    } catch {
      file.discard()
      throw error
    }
  }

  /// Writes tensors already in memory.
  public static func write(
    _ tensors: [Tensor], to path: String, metadata: [String: String]? = defaultMetadata
  ) throws(FormatError) {
    try write(tensors.map(TensorSource.init), to: path, metadata: metadata)
  }
}
