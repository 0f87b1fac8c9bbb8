// Safetensors checkpoints: one file, or a directory holding `model.safetensors` or shards with their
// index. One call opens any of them; tensors are then read by name, zero-copy. Writing plans shards by
// a byte budget and writes each shard atomically, the index last.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A tensor's place in a checkpoint: which file, and where in it.
public struct CheckpointEntry: Equatable, Sendable {
  public var file: Int
  public var entry: SafetensorsEntry
  public var info: TensorInfo { entry.info }
}

public final class SafetensorsCheckpoint: CheckpointReader, @unchecked Sendable {
  /// The path that was opened (a file or a directory).
  public let path: String
  public let shards: [SafetensorsFile]
  public let index: ShardIndex?
  /// Every tensor: shard by shard in file-name order, data order within a shard.
  public let entries: [CheckpointEntry]
  private let byName: [String: Int]

  /// Opens a safetensors file, or a checkpoint directory (sharded with an index, or `model.safetensors`).
  /// Every problem between an index and its shards is collected and reported together.
  public init(path: String) throws(FormatError) {
    self.path = path
    let directory: String
    let fileNames: [String]
    var index: ShardIndex?
    if FileSystem.isDirectory(path) {
      directory = path.hasSuffix("/") ? path : path + "/"
      if FileSystem.exists(directory + ShardIndex.fileName) {
        // transformers loads model.safetensors when it exists and ignores the index: a directory with both
        // holds two models, and which one a reader gets would depend on the reader.
        if FileSystem.exists(directory + "model.safetensors") && !((try? ShardIndex(contentsOf: directory + ShardIndex.fileName))?.shardFiles == ["model.safetensors"]) {
          throw .notACheckpoint(
            path: path,
            reason: "holds both model.safetensors and the sharded \(ShardIndex.fileName); transformers would load model.safetensors, the index names other files (remove one of them)")
        }
        let loaded = try ShardIndex(contentsOf: directory + ShardIndex.fileName)
        index = loaded
        fileNames = loaded.shardFiles
        let missing = fileNames.filter { !FileSystem.exists(directory + $0) }
        if !missing.isEmpty {
          throw FormatError.many(missing.map { .shards(index: directory + ShardIndex.fileName, problem: .missingShard($0)) }).flattened
        }
      } else if FileSystem.exists(directory + "model.safetensors") {
        fileNames = ["model.safetensors"]
      } else {
        let candidates = try FileSystem.list(directory).filter { $0.hasSuffix(".safetensors") }.sorted()
        guard candidates.count == 1 else {
          throw .notACheckpoint(
            path: path,
            reason: candidates.isEmpty
              ? "no model.safetensors, no \(ShardIndex.fileName) and no other .safetensors file"
              : "several .safetensors files but no \(ShardIndex.fileName)")
        }
        fileNames = candidates
      }
    } else {
      directory = ""
      fileNames = [path]
    }
    self.index = index

    var files: [SafetensorsFile] = []
    for name in fileNames { files.append(try SafetensorsFile(path: directory + name)) }
    self.shards = files

    var entries: [CheckpointEntry] = []
    var byName: [String: Int] = [:]
    var problems: [FormatError] = []
    for (f, file) in files.enumerated() {
      for e in file.entries {
        if let previous = byName[e.info.name] {
          problems.append(.shards(
            index: directory + ShardIndex.fileName, problem: .duplicateTensor(e.info.name, first: files[entries[previous].file].path, second: file.path)))
          continue
        }
        byName[e.info.name] = entries.count
        entries.append(CheckpointEntry(file: f, entry: e))
        if let index, index.weightMap[e.info.name] != fileNames[f] {
          let indexPath = directory + ShardIndex.fileName
          problems.append(.shards(
            index: indexPath,
            problem: .mismatch(index.weightMap[e.info.name] == nil
              ? "tensor `\(e.info.name)` in \(fileNames[f]) is not in the weight_map"
              : "tensor `\(e.info.name)` is mapped to \(index.weightMap[e.info.name]!) but stored in \(fileNames[f])")))
        }
      }
    }
    if let index {
      for name in index.weightMap.keys.sorted() where byName[name] == nil {
        problems.append(.tensorNotFound(file: directory + index.weightMap[name]!, tensor: name))
      }
    }
    if !problems.isEmpty { throw FormatError.many(problems).flattened }
    self.entries = entries
    self.byName = byName
  }

  public var infos: [TensorInfo] { entries.map(\.info) }
  public func entry(_ name: String) -> CheckpointEntry? { byName[name].map { entries[$0] } }
  /// Sum of tensor data bytes (what index.json calls total_size).
  public var totalDataBytes: Int { entries.reduce(0) { $0 + $1.entry.dataRange.count } }

  public func tensor(_ name: String) throws(FormatError) -> Tensor {
    guard let e = entry(name) else { throw .tensorNotFound(file: path, tensor: name) }
    return try shards[e.file].tensor(e.entry)
  }

  public func tensor(_ e: CheckpointEntry) throws(FormatError) -> Tensor { try shards[e.file].tensor(e.entry) }
  public var files: [String] { shards.map(\.path) }
  public var metadata: [String: String]? { shards.first?.metadata }
  public func file(of name: String) -> String { entry(name).map { shards[$0.file].path } ?? path }
  public func release(_ name: String) { if let e = entry(name) { release(e) } }
  public func release(_ e: CheckpointEntry) { shards[e.file].release(e.entry) }
  public func release(_ name: String, bytes: Range<Int>) { if let e = entry(name) { shards[e.file].release(e.entry, bytes: bytes) } }
  public func adviseSequential(_ e: CheckpointEntry) { shards[e.file].adviseSequential(e.entry) }

  /// The HF side files beside the tensors (config, tokenizer, generation config), when opened as a
  /// directory; a single file has none.
  public func sideFiles() -> [SideFile] {
    guard FileSystem.isDirectory(path) else { return [] }
    let dir = path.hasSuffix("/") ? path : path + "/"
    return SideFile.hfNames.filter { FileSystem.exists(dir + $0) }.map { SideFile(name: $0, content: .copy(from: dir + $0)) }
  }

  /// Writes tensors as a checkpoint into `directory` (which must exist): one `model.safetensors`, or
  /// shards of at most `maxShardSize` bytes plus the index. Tensors keep the order given for sharding;
  /// each shard is written atomically and the index last. Returns the file names written.
  @discardableResult
  public static func write(
    _ sources: [TensorSource], toDirectory directory: String, maxShardSize: Int?,
    metadata: [String: String]? = SafetensorsWriter.defaultMetadata,
    progress: ((_ shard: Int, _ of: Int) -> Void)? = nil
  ) throws(FormatError) -> [String] {
    var sizes: [Int] = []
    for s in sources {
      guard let n = s.info.byteCount else { throw .validationOverflow(file: directory, tensor: s.info.name) }
      sizes.append(n)
    }
    let plan = maxShardSize.map { ShardPlanner.plan(sizes: sizes, maxShardSize: $0) } ?? [Array(sources.indices)]
    let dir = directory.hasSuffix("/") ? directory : directory + "/"
    var names: [String] = []
    var weightMap: [String: String] = [:]
    for (i, members) in plan.enumerated() {
      progress?(i, plan.count)
      let name = ShardPlanner.shardName(i, of: plan.count)
      try SafetensorsWriter.write(members.map { sources[$0] }, to: dir + name, metadata: metadata)
      for m in members { weightMap[sources[m].info.name] = name }
      names.append(name)
    }
    if plan.count > 1 {
      let index = ShardIndex(weightMap: weightMap, totalSize: sizes.reduce(0, +))
      try AtomicFile.write(index.json(), to: dir + ShardIndex.fileName)
      names.append(ShardIndex.fileName)
    }
    return names
  }
}
