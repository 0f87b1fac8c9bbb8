// Reading compressed sparse checkpoints (layouts in SparseCheckpointWriter.swift): the espalier format,
// recognised by its safetensors __metadata__, and compressed-tensors' sparse-bitmask / sparse-24-bitmask,
// recognised by config.json's quantization_config.sparsity_config. Tensors are presented dense, as the
// uncompressed checkpoint had them, and decoded on each read with every check the format allows (zstd
// frame checksums, mask bit counts, the per-tensor XXH64), so a flipped bit is an error, never a value.

public final class SparseCheckpoint: CheckpointReader, @unchecked Sendable {
  public let storage: SafetensorsCheckpoint
  public let format: SparseFormat
  public let infos: [TensorInfo]
  private let layouts: [String: Layout]

  enum Layout {
    case raw(stored: String, checksum: String?)
    case espalier(descriptor: JSONObject)
    case compressedTensors(module: String)
  }

  public var path: String { storage.path }
  /// The metadata of the checkpoint that was compressed (espalier keeps it under `source_metadata`).
  public var metadata: [String: String]? {
    guard format == .espalier else { return storage.metadata }
    guard let text = storage.metadata?["source_metadata"], let object = try? JSONParser.parse(Array(text.utf8)).objectValue else { return nil }
    var result: [String: String] = [:]
    for key in object.keys { if let value = object[key]?.stringValue { result[key] = value } }
    return result
  }
  public var files: [String] { storage.files }
  public func file(of name: String) -> String {
    switch layouts[name] {
    case .raw(let stored, _): return storage.file(of: stored)
    case .espalier: return storage.file(of: EspalierSparse.part(name, "values"))
    case .compressedTensors(let module): return storage.file(of: module + ".compressed")
    case nil: return path
    }
  }

  /// The checkpoint itself, or the compressed one it holds presented dense.
  public static func wrapping(_ storage: SafetensorsCheckpoint) throws(FormatError) -> any CheckpointReader {
    if storage.shards.contains(where: { $0.metadata?["format"] == EspalierSparse.format }) {
      return try SparseCheckpoint(espalier: storage)
    }
    if let format = try compressedTensorsFormat(storage), format != .espalier {
      return try SparseCheckpoint(compressedTensors: storage, format: format)
    }
    return storage
  }

  /// The sparse layout config.json names, if any (nil: no config, no sparsity_config, or "dense").
  static func compressedTensorsFormat(_ storage: SafetensorsCheckpoint) throws(FormatError) -> SparseFormat? {
    guard FileSystem.isDirectory(storage.path) else { return nil }
    let path = (storage.path.hasSuffix("/") ? storage.path : storage.path + "/") + "config.json"
    guard FileSystem.exists(path) else { return nil }
    let root = try JSONFile.read(path)
    guard let sparsity = root.objectValue?["quantization_config"]?.objectValue?["sparsity_config"]?.objectValue,
      let name = sparsity["format"]?.stringValue
    else { return nil }
    switch name.lowercased().replacingUnderscores() {
    case "dense": return nil
    case SparseFormat.sparseBitmask.rawValue: return .sparseBitmask
    case SparseFormat.sparse24Bitmask.rawValue: return .sparse24Bitmask
    default: throw .io(file: path, reason: "sparsity_config format `\(name)` is not supported (sparse-bitmask, sparse-24-bitmask or dense)")
    }
  }

  init(espalier storage: SafetensorsCheckpoint) throws(FormatError) {
    self.storage = storage
    format = .espalier
    var infos: [TensorInfo] = [], layouts: [String: Layout] = [:], problems: [FormatError] = []
    for shard in storage.shards {
      let meta = shard.metadata ?? [:]
      guard meta["format"] == EspalierSparse.format else {
        problems.append(.io(file: shard.path, reason: "a shard of an espalier-sparse checkpoint without its __metadata__ format"))
        continue
      }
      guard meta["version"] == EspalierSparse.version else {
        problems.append(.io(file: shard.path, reason: "espalier-sparse version \(meta["version"] ?? "(none)") is not readable here (this build reads version \(EspalierSparse.version); a newer espalier wrote it?)"))
        continue
      }
      let descriptors: JSONObject
      do { descriptors = try JSONParser.parse(Array((meta["tensors"] ?? "").utf8)).objectValue ?? JSONObject() } catch {
        problems.append(.io(file: shard.path, reason: "__metadata__ `tensors` is not valid JSON: \(error)"))
        continue
      }
      var described = Set<String>()
      let storedInfos = Dictionary(shard.entries.map { ($0.info.name, $0.info) }, uniquingKeysWith: { a, _ in a })
      for name in descriptors.keys {
        guard let d = descriptors[name]!.objectValue, let info = Self.info(name, d) else {
          problems.append(.compressed(file: shard.path, tensor: name, reason: "its descriptor lacks a valid dtype or shape"))
          continue
        }
        guard layouts[name] == nil else {
          problems.append(.compressed(file: shard.path, tensor: name, reason: "described twice (in two shards)"))
          continue
        }
        let raw = d["encoding"]?.stringValue == "raw"
        if raw, let stored = storedInfos[name], stored.dtype != info.dtype || stored.shape != info.shape {
          problems.append(.compressed(
            file: shard.path, tensor: name, reason: "its descriptor says \(info.dtype) \(info.shape), the stored tensor is \(stored.dtype) \(stored.shape)"))
          continue
        }
        infos.append(info)
        layouts[name] = raw ? .raw(stored: name, checksum: d["xxh64"]?.stringValue) : .espalier(descriptor: d)
        described.formUnion(raw ? [name] : [EspalierSparse.part(name, "values"), EspalierSparse.part(name, "mask")])
      }
      // Every stored tensor belongs to a described one: a stray tensor (a dense copy under a described
      // name, or one the metadata dropped) would be invisible to readers of this layout but not to others.
      for entry in shard.entries where !described.contains(entry.info.name) {
        problems.append(.compressed(
          file: shard.path, tensor: entry.info.name,
          reason: "is stored but the espalier-sparse metadata does not describe it (a dense copy, or metadata that dropped a tensor)"))
      }
    }
    if !problems.isEmpty { throw FormatError.many(problems).flattened }
    self.infos = infos
    self.layouts = layouts
  }

  init(compressedTensors storage: SafetensorsCheckpoint, format: SparseFormat) throws(FormatError) {
    self.storage = storage
    self.format = format
    var infos: [TensorInfo] = [], layouts: [String: Layout] = [:], problems: [FormatError] = []
    let parts = [".shape", ".compressed", ".bitmask", ".row_offsets"]
    for entry in storage.entries {
      let name = entry.info.name
      if let part = parts.first(where: { name.hasSuffix($0) }) {
        guard part == ".compressed" else { continue }
        let module = String(name.dropLast(part.count))
        do throws(FormatError) {
          let shape = try Self.int64s(storage.tensor(module + ".shape"), file: storage.file(of: module + ".shape"))
          _ = try storage.tensor(module + ".bitmask")
          if format == .sparseBitmask { _ = try storage.tensor(module + ".row_offsets") }
          let info = TensorInfo(name: module + ".weight", dtype: entry.info.dtype, shape: shape)
          guard shape.count == 2, info.byteCount != nil, entry.info.dtype.bits % 8 == 0 else {
            throw FormatError.compressed(file: storage.file(of: name), tensor: module + ".shape", reason: "\(shape) is not the shape of a 2-D \(entry.info.dtype) weight")
          }
          guard layouts[module + ".weight"] == nil else {
            throw FormatError.compressed(file: storage.file(of: name), tensor: module + ".weight", reason: "is stored both dense and compressed")
          }
          infos.append(info)
          layouts[module + ".weight"] = .compressedTensors(module: module)
        } catch { problems.append(error) }
      } else {
        guard layouts[name] == nil else {
          problems.append(.compressed(file: storage.file(of: name), tensor: name, reason: "is stored both dense and compressed"))
          continue
        }
        infos.append(entry.info)
        layouts[name] = .raw(stored: name, checksum: nil)
      }
    }
    if !problems.isEmpty { throw FormatError.many(problems).flattened }
    self.infos = infos
    self.layouts = layouts
  }

  static func info(_ name: String, _ d: JSONObject) -> TensorInfo? {
    guard let dtype = d["dtype"]?.stringValue.flatMap(DType.init(safetensorsName:)),
      let dims = d["shape"]?.arrayValue?.compactMap(\.intValue), dims.count == d["shape"]?.arrayValue?.count
    else { return nil }
    let info = TensorInfo(name: name, dtype: dtype, shape: dims)
    return info.byteCount == nil ? nil : info
  }

  static func int64s(_ t: Tensor, file: String) throws(FormatError) -> [Int] {
    guard t.dtype == .i64 else { throw .compressed(file: file, tensor: t.name, reason: "dtype \(t.dtype), I64 expected") }
    return t.withUnsafeBytes { b in (0..<t.elementCount).map { Int(Int64(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))) } }
  }

  public func release(_ name: String) {
    switch layouts[name] {
    case .raw(let stored, _): storage.release(stored)
    case .espalier: for kind in ["values", "mask"] { storage.release(EspalierSparse.part(name, kind)) }
    case .compressedTensors(let module): for p in [".shape", ".compressed", ".bitmask", ".row_offsets"] { storage.release(module + p) }
    case nil: break
    }
  }

  /// Side files; for compressed-tensors the config without its sparsity_config, since what readers
  /// of this checkpoint get (and a conversion writes) is dense.
  public func sideFiles() throws(FormatError) -> [SideFile] {
    var sides = storage.sideFiles()
    guard format != .espalier, let i = sides.firstIndex(where: { $0.name == "config.json" }) else { return sides }
    sides[i] = try sides[i].editingJSON { root in
      guard var q = root["quantization_config"]?.objectValue else { return }
      q["sparsity_config"] = nil
      root["quantization_config"] = q.keys.contains("config_groups") ? .object(q) : nil
    }
    return sides
  }

  public func tensor(_ name: String) throws(FormatError) -> Tensor {
    guard let layout = layouts[name], let info = infos.first(where: { $0.name == name }) else {
      throw .tensorNotFound(file: path, tensor: name)
    }
    let file = self.file(of: name)
    func fail(_ reason: String) -> FormatError { .compressed(file: file, tensor: name, reason: reason) }
    switch layout {
    case .raw(let stored, let checksum):
      let tensor = try storage.tensor(stored)
      if let checksum, tensor.withUnsafeBytes({ XXHash64.hex(XXHash64.hash($0)) }) != checksum {
        throw fail("checksum mismatch (stored XXH64 \(checksum)): the file is corrupt")
      }
      return tensor
    case .espalier(let d): return try decodeEspalier(info, d, fail)
    case .compressedTensors(let module): return try decodeCompressedTensors(info, module, fail)
    }
  }

  private func decodeEspalier(_ info: TensorInfo, _ d: JSONObject, _ fail: (String) -> FormatError) throws(FormatError) -> Tensor {
    let size = info.dtype.bits / 8
    let (rows, cols) = SparseMasks.rowsAndCols(info.shape)
    // The dense output is allocated only after the stored parts' frames are checked (in `inflate`).
    var output: OwnedBytes!
    func allocateOutput() throws(FormatError) {
      output = try OwnedBytes.allocate(info.byteCount!, file: file(of: info.name), what: "tensor `\(info.name)`")
    }
    let encoding = d["encoding"]?.stringValue ?? ""
    func frames(_ key: String) throws(FormatError) -> [Int] {
      guard let list = d[key]?.arrayValue?.compactMap(\.intValue), list.count == d[key]?.arrayValue?.count else { throw fail("descriptor lacks `\(key)`") }
      return list
    }
    func inflate(_ kind: String, _ key: String, elementSize: Int, chunk: Int, count: Int) throws(FormatError) -> OwnedBytes {
      let part = try storage.tensor(EspalierSparse.part(info.name, kind))
      let list = try frames(key)
      if case .failure(let e) = ZstdFrames.layout(
        frames: list, storedBytes: part.byteCount, plainBytes: count, elementSize: elementSize, chunkElements: chunk)
      {
        throw fail("\(kind): \(e.reason)")
      }
      let plain = try OwnedBytes.allocate(count, file: file(of: info.name), what: "tensor `\(info.name)` (\(kind))")
      if let problem = part.withUnsafeBytes({ ZstdFrames.decompress($0, frames: list, elementSize: elementSize, chunkElements: chunk, into: plain.mutableBytes) }) {
        throw fail("\(kind): \(problem)")
      }
      return plain
    }
    switch encoding {
    case "dense":
      output = try inflate("values", "value_frames", elementSize: size, chunk: EspalierSparse.valueChunk, count: info.byteCount!)
    case "bitmask", "group":
      guard let stored = d["stored"]?.intValue, stored <= rows * cols else { throw fail("descriptor lacks a valid `stored` count") }
      var code: GroupCode?
      var maskBytes = rows * SparseMasks.rowBytes(cols: cols)
      if encoding == "group" {
        guard let k = d["keep"]?.intValue, let m = d["group"]?.intValue, let c = GroupCode(keep: k, group: m), cols % m == 0,
          stored == rows * cols / m * k
        else { throw fail("descriptor has no valid group code for \(info.shape)") }
        code = c
        maskBytes = c.codeBytes(groups: rows * cols / m)
      }
      let mask = try inflate("mask", "mask_frames", elementSize: 1, chunk: EspalierSparse.maskChunk, count: maskBytes)
      let values = try inflate("values", "value_frames", elementSize: size, chunk: EspalierSparse.valueChunk, count: stored * size)
      try allocateOutput()
      if let code {
        if let problem = SparseMasks.checkGroups(mask.bytes, groups: rows * cols / code.group, code: code) { throw fail(problem) }
        SparseMasks.decodeGroups(mask.bytes, values.bytes, groups: rows * cols / code.group, elementSize: size, code: code, into: output.mutableBytes)
      } else {
        if let problem = SparseMasks.checkBitmask(mask.bytes, rows: rows, cols: cols, storedCount: stored) { throw fail(problem) }
        SparseMasks.decodeBitmask(mask.bytes, values.bytes, rows: rows, cols: cols, elementSize: size, into: output.mutableBytes)
      }
    default: throw fail("unknown encoding `\(encoding)`")
    }
    let checksum = XXHash64.hex(XXHash64.hash(output.bytes))
    guard checksum == d["xxh64"]?.stringValue else {
      throw fail("checksum mismatch: the decoded tensor hashes to \(checksum), the file records \(d["xxh64"]?.stringValue ?? "none")")
    }
    return try Tensor(info: info, bytes: output.bytes, owner: output)
  }

  private func decodeCompressedTensors(_ info: TensorInfo, _ module: String, _ fail: (String) -> FormatError) throws(FormatError) -> Tensor {
    let (rows, cols) = (info.shape[0], info.shape[1])
    let size = info.dtype.bits / 8
    let values = try storage.tensor(module + ".compressed"), mask = try storage.tensor(module + ".bitmask")
    guard mask.dtype == .u8, mask.shape == [rows, SparseMasks.rowBytes(cols: cols)] else {
      throw fail("\(module).bitmask is \(mask.dtype) \(mask.shape), U8 [\(rows), \(SparseMasks.rowBytes(cols: cols))] expected")
    }
    let stored = values.elementCount
    if format == .sparse24Bitmask, values.shape != [rows, cols / 2] || cols % 4 != 0 {
      throw fail("\(module).compressed is \(values.shape), [\(rows), \(cols / 2)] expected for sparse-24-bitmask")
    }
    if let problem = mask.withUnsafeBytes({ SparseMasks.checkBitmask($0, rows: rows, cols: cols, storedCount: stored) }) { throw fail(problem) }
    if format == .sparseBitmask {  // unused by decoders, but compressed-tensors always writes them right
      let offsets = try Self.int64s(try storage.tensor(module + ".row_offsets"), file: storage.file(of: module + ".row_offsets"))
      let rb = SparseMasks.rowBytes(cols: cols)
      var running = 0
      let expected: [Int] = mask.withUnsafeBytes { m in
        (0..<rows).map { r in
          defer { for b in 0..<rb { running += m[r * rb + b].nonzeroBitCount } }
          return running
        }
      }
      if offsets != expected { throw fail("\(module).row_offsets is not the running count of the bitmask's rows") }
    }
    let output = try OwnedBytes.allocate(info.byteCount!, file: file(of: info.name), what: "tensor `\(info.name)`")
    mask.withUnsafeBytes { m in
      values.withUnsafeBytes { v in SparseMasks.decodeBitmask(m, v, rows: rows, cols: cols, elementSize: size, into: output.mutableBytes) }
    }
    return try Tensor(info: info, bytes: output.bytes, owner: output)
  }
}

extension String {
  func replacingUnderscores() -> String { String(map { $0 == "_" || $0 == " " ? "-" : $0 }) }
}
