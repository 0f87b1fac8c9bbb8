// Any checkpoint, opened by its content: safetensors (file or directory; compressed sparse ones are
// presented dense), GGUF or HDF5. Each reader
// presents tensors under HF names in torch order, so everything downstream sees one shape of data.

/// A checkpoint being read: its tensors, and the side files that belong with them.
public protocol CheckpointReader: AnyObject {
  var path: String { get }
  /// Tensors as `tensor(_:)` returns them: HF names, torch shapes, the dtype delivered.
  var infos: [TensorInfo] { get }
  func tensor(_ name: String) throws(FormatError) -> Tensor
  /// Drops the resident pages of a tensor once a streaming tool is done with it.
  func release(_ name: String)
  /// Drops the resident pages of a byte range of a tensor's data (a streamed chunk of a large matrix).
  func release(_ name: String, bytes: Range<Int>)
  /// config.json, tokenizer files and the like, copied or generated.
  func sideFiles() throws(FormatError) -> [SideFile]
  /// The file that holds a tensor (a shard of a sharded checkpoint; otherwise `path`).
  func file(of name: String) -> String
  /// The files the checkpoint's tensors live in.
  var files: [String] { get }
  /// The safetensors `__metadata__` of the checkpoint as it was written (nil: none, or not safetensors).
  var metadata: [String: String]? { get }
}

extension CheckpointReader {
  public func file(of name: String) -> String { path }
  public func release(_ name: String, bytes: Range<Int>) { release(name) }
  public var files: [String] { [path] }
  public var metadata: [String: String]? { nil }

  /// The metadata a converted copy carries: the source's, with the `format` transformers requires.
  public var metadataForCopy: [String: String] {
    (metadata ?? [:]).merging(SafetensorsWriter.defaultMetadata) { source, _ in source }
  }

  /// Sources that read each tensor lazily and drop its pages once written (for streaming conversions).
  public var sources: [TensorSource] {
    infos.map { info in
      TensorSource(info: info, load: { try self.tensor(info.name) }, release: { self.release(info.name) })
    }
  }
}

/// A non-tensor file of a checkpoint directory.
public struct SideFile: Equatable, Sendable {
  public enum Content: Equatable, Sendable {
    case copy(from: String)
    case text(String)
  }
  public var name: String
  public var content: Content

  public init(name: String, content: Content) {
    self.name = name
    self.content = content
  }

  /// The files HF tooling keeps beside the weights, copied when present (mergekit's list plus config).
  public static let hfNames = [
    "config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
    "tokenizer.json", "tokenizer.model", "added_tokens.json", "merges.txt", "vocab.json",
    "chat_template.jinja", "chat_template.json",
  ]

  /// Writes the file into `directory` atomically.
  public func write(into directory: String) throws(FormatError) {
    let target = (directory.hasSuffix("/") ? directory : directory + "/") + name
    switch content {
    case .text(let text): try AtomicFile.write(text, to: target)
    case .copy(let source):
      let mapped = try MappedFile(path: source)
      defer { withExtendedLifetime(mapped) {} }
      let file = try AtomicFile(path: target)
      try file.write(mapped.bytes)
      try file.commit()
    }
  }
}

extension SideFile {
  /// The file's text (read from disk for a copy).
  public func text() throws(FormatError) -> String {
    switch content {
    case .text(let t): return t
    case .copy(let source):
      let mapped = try MappedFile(path: source)
      return mapped.withBytes { String(decoding: $0, as: UTF8.self) }
    }
  }

  /// A JSON side file as transformers writes config.json: indent 2, sorted keys, a final newline.
  public static func json(_ name: String, _ root: JSONObject) -> SideFile {
    SideFile(name: name, content: .text(JSONWriter.pretty(.object(root)) + "\n"))
  }

  /// This JSON side file changed by `edit`; itself, byte for byte, when `edit` changes nothing.
  public func editingJSON(_ edit: (inout JSONObject) -> Void) throws(FormatError) -> SideFile {
    let root: JSONObject
    do {
      guard let object = try JSONParser.parse(Array(try text().utf8)).objectValue else {
        throw FormatError.io(file: name, reason: "not a JSON object")
      }
      root = object
    } catch let error as FormatError { throw error } catch { throw .io(file: name, reason: "invalid JSON: \(error)") }
    var edited = root
    edit(&edited)
    return edited == root ? self : .json(name, edited)
  }
}

public enum Checkpoint {
  public enum Kind: String, Sendable { case safetensors, gguf, hdf5 }

  /// What a file is, by its first bytes: "GGUF", the HDF5 signature, or else safetensors (whose strict
  /// reader then explains what is wrong).
  public static func kind(ofFile path: String) throws(FormatError) -> Kind {
    let mapped = try MappedFile(path: path)
    defer { withExtendedLifetime(mapped) {} }
    let b = mapped.bytes
    if b.count >= 4, b.loadUnaligned(as: UInt32.self) == 0x4655_4747 { return .gguf }
    let hdf5: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]
    if b.count >= 8, Array(b[0..<8]) == hdf5 { return .hdf5 }
    return .safetensors
  }

  /// Opens a file by its content, or a directory by what it holds (safetensors first, then a single
  /// .gguf, then a single .h5/.hdf5 file).
  public static func open(_ path: String) throws(FormatError) -> any CheckpointReader {
    if FileSystem.isDirectory(path) {
      let names = try FileSystem.list(path)
      if names.contains(where: { $0.hasSuffix(".safetensors") || $0 == ShardIndex.fileName }) {
        return try SparseCheckpoint.wrapping(SafetensorsCheckpoint(path: path))
      }
      let dir = path.hasSuffix("/") ? path : path + "/"
      for suffixes in [[".gguf"], [".h5", ".hdf5"]] {
        let found = names.filter { n in suffixes.contains { n.hasSuffix($0) } }.sorted()
        if found.count == 1 { return try open(dir + found[0]) }
        if found.count > 1 {
          throw .notACheckpoint(path: path, reason: "several \(suffixes[0]) files; name the one to read")
        }
      }
      throw .notACheckpoint(path: path, reason: "no .safetensors, .gguf or .h5 file")
    }
    switch try kind(ofFile: path) {
    case .gguf: return try GGUFCheckpoint(path: path)
    case .hdf5: return try HDF5Checkpoint(path: path)
    case .safetensors:
      for (suffix, format) in [(".gguf", "GGUF"), (".h5", "HDF5"), (".hdf5", "HDF5")] where path.hasSuffix(suffix) {
        throw .notACheckpoint(path: path, reason: "named like \(format) but does not start with the \(format) signature")
      }
      return try SparseCheckpoint.wrapping(SafetensorsCheckpoint(path: path))
    }
  }
}

extension FormatError {
  /// A single problem stays itself; several become `.many`.
  var flattened: FormatError {
    if case .many(let list) = self, list.count == 1 { return list[0] }
    return self
  }

  /// The single problems a (possibly collected) error holds.
  public var problems: [FormatError] {
    if case .many(let list) = self { return list.flatMap(\.problems) }
    return [self]
  }
}
