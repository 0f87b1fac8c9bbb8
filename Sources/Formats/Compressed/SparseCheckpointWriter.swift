// Writing compressed sparse checkpoints (espalier convert --compress). Each dense tensor is encoded into
// stored tensors ("parts") of a safetensors-valid checkpoint directory:
//
//   espalier (ours; __metadata__ {"format": "espalier-sparse", "version": "1", "tensors": {...}})
//     <name>#values  U8  zstd frames of the stored values, byte-shuffled, 2^18 values per frame
//     <name>#mask    U8  zstd frames of the bitmask or the group codes (SparseMasks), 2^20 bytes per frame
//     <name>         the tensor itself ("raw": integers, and tensors under 1 KiB)
//   and per tensor a descriptor in "tensors": dtype, shape, encoding (raw | dense | bitmask | group),
//   stored count, keep/group, frame sizes, and the XXH64 of the dense bytes, checked on every read.
//   The encoding is the smallest before zstd of: dense, bitmask, and each group code that fits.
//
//   sparse-bitmask / sparse-24-bitmask (compressed-tensors 0.14.0.1, formats.md §2): every 2-D weight of
//   a Linear module (the *_proj weights; lm_head ignored) becomes <module>.shape / .compressed /
//   .bitmask (/ .row_offsets); other tensors stay as they are, and config.json gains the
//   quantization_config that names the layout.
//
// Compressed sizes are known only after encoding, so each shard's parts are spilled to a scratch file
// and the shard is written from it once its header can be built: memory stays O(largest tensor).

#if canImport(Glibc)
  import Glibc
#endif

public enum SparseFormat: String, CaseIterable, Sendable {
  case espalier
  case sparseBitmask = "sparse-bitmask"
  case sparse24Bitmask = "sparse-24-bitmask"
}

public struct CompressionOptions: Sendable {
  public var format: SparseFormat
  /// zstd level of the espalier format (ZstdFrames.levels).
  public var level: Int
  /// Group codes tried for the espalier format's masks, besides the bitmask.
  public var groupCodes: [GroupCode]

  public init(format: SparseFormat = .espalier, level: Int = 3, groupCodes: [GroupCode] = [.twoFour]) {
    self.format = format
    self.level = level
    self.groupCodes = groupCodes
  }
}

/// The stored tensors one dense tensor becomes, and (espalier format) its descriptor.
struct EncodedTensor {
  var parts: [Tensor]
  var descriptor: JSONValue?
  /// Elements and stored elements, for the global sparsity written into compressed-tensors' config.
  var counted: (elements: Int, stored: Int)?
  /// Whether a compressed-tensors target keeps at most 2 of every 4 (its sparsity_structure is then 2:4).
  var fitsTwoFour = false
}

enum EspalierSparse {
  static let format = "espalier-sparse"
  static let version = "1"
  static let valueChunk = 1 << 18
  static let maskChunk = 1 << 20
  static let rawBelowBytes = 1024

  static func part(_ name: String, _ kind: String) -> String { name + "#" + kind }

  static func frames(_ bytes: [UInt8], elementSize: Int, chunk: Int, level: Int) throws(FormatError) -> ZstdFrames.Compressed {
    do {
      return try bytes.withUnsafeBytes { try ZstdFrames.compress($0, elementSize: elementSize, chunkElements: chunk, level: level) }
    } catch let error as FormatError { throw error } catch { throw .io(file: "zstd", reason: "\(error)") }
  }

  static func encode(_ tensor: Tensor, options: CompressionOptions) throws(FormatError) -> EncodedTensor {
    let info = tensor.info
    let size = info.dtype.bits / 8
    var descriptor = JSONObject([
      ("dtype", .string(info.dtype.safetensorsName)), ("shape", .array(info.shape.map { .number(String($0)) })),
    ])
    let checksum = tensor.withUnsafeBytes { XXHash64.hex(XXHash64.hash($0)) }
    guard info.dtype.isFloatingPoint, [1, 2, 4, 8].contains(size), info.dtype.bits % 8 == 0, tensor.byteCount >= rawBelowBytes else {
      descriptor["encoding"] = .string("raw")
      descriptor["xxh64"] = .string(checksum)
      return EncodedTensor(parts: [tensor], descriptor: .object(descriptor))
    }
    let (rows, cols) = SparseMasks.rowsAndCols(info.shape)
    let n = rows * cols
    let stored = tensor.withUnsafeBytes { SparseMasks.storedCount($0, elementSize: size) }
    // Candidates by their size before zstd; only the encodings that can beat dense are built.
    var best: (encoding: String, mask: [UInt8], values: [UInt8], code: GroupCode?)?
    func consider(_ encoding: String, _ mask: [UInt8], _ values: [UInt8], _ code: GroupCode?) {
      if best == nil || mask.count + values.count < best!.mask.count + best!.values.count { best = (encoding, mask, values, code) }
    }
    if rows * SparseMasks.rowBytes(cols: cols) + stored * size < tensor.byteCount {
      let bitmask = tensor.withUnsafeBytes { SparseMasks.encodeBitmask($0, rows: rows, cols: cols, elementSize: size) }
      consider("bitmask", bitmask.mask, bitmask.values, nil)
    }
    for code in options.groupCodes where cols % code.group == 0 && stored <= n / code.group * code.keep {
      if let g = tensor.withUnsafeBytes({ SparseMasks.encodeGroups($0, rows: rows, cols: cols, elementSize: size, code: code) }) {
        consider("group", g.codes, g.values, code)
      }
    }
    var parts: [Tensor] = []
    if let best {
      descriptor["encoding"] = .string(best.encoding)
      if let code = best.code {
        descriptor["keep"] = .number(String(code.keep))
        descriptor["group"] = .number(String(code.group))
      }
      descriptor["stored"] = .number(String(best.values.count / size))
      let mask = try frames(best.mask, elementSize: 1, chunk: maskChunk, level: options.level)
      let values = try frames(best.values, elementSize: size, chunk: valueChunk, level: options.level)
      descriptor["mask_frames"] = .array(mask.frames.map { .number(String($0)) })
      descriptor["value_frames"] = .array(values.frames.map { .number(String($0)) })
      parts.append(try mask.tensor(part(info.name, "mask")))
      parts.append(try values.tensor(part(info.name, "values")))
    } else {
      descriptor["encoding"] = .string("dense")
      let values = try tensor.withUnsafeBytes { (b) throws(FormatError) in try ZstdFrames.compress(b, elementSize: size, chunkElements: valueChunk, level: options.level) }
      descriptor["value_frames"] = .array(values.frames.map { .number(String($0)) })
      parts.append(try values.tensor(part(info.name, "values")))
    }
    descriptor["xxh64"] = .string(checksum)
    return EncodedTensor(parts: parts, descriptor: .object(descriptor), counted: (rows * cols, stored))
  }
}

enum CompressedTensorsLayout {
  static let version = "0.14.0.1"

  /// The 2-D weights of Linear modules in the Llama family (every *_proj; lm_head is ignored).
  static func isTarget(_ info: TensorInfo) -> Bool {
    info.shape.count == 2 && info.name.hasSuffix("_proj.weight") && info.dtype.isFloatingPoint && info.dtype.bits % 8 == 0
  }

  static func encode(_ tensor: Tensor, format: SparseFormat, file: String) throws(FormatError) -> EncodedTensor {
    guard isTarget(tensor.info) else {
      let size = max(1, tensor.dtype.bits / 8)
      let stored = tensor.dtype.bits % 8 == 0 ? tensor.withUnsafeBytes { SparseMasks.storedCount($0, elementSize: size) } : tensor.elementCount
      return EncodedTensor(parts: [tensor], counted: (tensor.elementCount, stored))
    }
    let module = String(tensor.name.dropLast(".weight".count))
    let (rows, cols) = (tensor.shape[0], tensor.shape[1])
    let size = tensor.dtype.bits / 8
    func i64(_ suffix: String, _ shape: [Int], _ values: [Int]) throws(FormatError) -> Tensor {
      var bytes: [UInt8] = []
      for v in values { withUnsafeBytes(of: Int64(v).littleEndian) { bytes.append(contentsOf: $0) } }
      return try Tensor(name: module + suffix, dtype: .i64, shape: shape, data: bytes)
    }
    let encoded = tensor.withUnsafeBytes { SparseMasks.encodeBitmask($0, rows: rows, cols: cols, elementSize: size) }
    let stored = encoded.values.count / size
    let groups = tensor.withUnsafeBytes { SparseMasks.encodeGroups($0, rows: rows, cols: cols, elementSize: size, code: .twoFour) }
    if format == .sparseBitmask {
      var offsets: [Int] = [], running = 0
      let rb = SparseMasks.rowBytes(cols: cols)
      for r in 0..<rows {
        offsets.append(running)
        for b in 0..<rb { running += encoded.mask[r * rb + b].nonzeroBitCount }
      }
      return EncodedTensor(parts: [
        try i64(".shape", [2], [rows, cols]),
        try Tensor(name: module + ".compressed", dtype: tensor.dtype, shape: [stored], data: encoded.values),
        try Tensor(name: module + ".bitmask", dtype: .u8, shape: [rows, rb], data: encoded.mask),
        try i64(".row_offsets", [rows], offsets),
      ], counted: (rows * cols, stored), fitsTwoFour: groups != nil)
    }
    let code = GroupCode.twoFour
    guard let groups else {
      throw .compressed(file: file, tensor: tensor.name, reason: cols % 4 != 0
        ? "sparse-24-bitmask needs a column count divisible by 4, not \(cols)"
        : "some group of 4 keeps more than 2 nonzeros, so it does not fit sparse-24-bitmask (use sparse-bitmask or espalier)")
    }
    let mask = SparseMasks.groupBitmask(groups.codes, rows: rows, cols: cols, code: code)
    return EncodedTensor(parts: [
      try i64(".shape", [2, 1], [rows, cols]),
      try Tensor(name: module + ".compressed", dtype: tensor.dtype, shape: [rows, cols / 2], data: groups.values),
      try Tensor(name: module + ".bitmask", dtype: .u8, shape: [rows, SparseMasks.rowBytes(cols: cols)], data: mask),
    ], counted: (rows * cols, stored), fitsTwoFour: true)
  }

  /// The quantization_config compressed-tensors reads from config.json (formats.md §2.2).
  /// `globalSparsity` is llm-compressor's: percent of zero parameters over the whole model.
  static func quantizationConfig(format: SparseFormat, globalSparsity: Double, twoFour: Bool) -> JSONValue {
    let sparsity = JSONObject([
      ("format", .string(format.rawValue)), ("global_sparsity", .number(String(globalSparsity))),
      ("ignore", .array([.string("lm_head")])), ("registry_requires_subclass", .bool(false)),
      ("sparsity_structure", .string(twoFour ? "2:4" : "unstructured")),
      ("targets", .array([.string("Linear")])),
    ])
    return .object(JSONObject([
      ("quant_method", .string("compressed-tensors")), ("sparsity_config", .object(sparsity)),
      ("transform_config", .object(JSONObject())), ("version", .string(version)),
    ]))
  }
}

extension SparseMasks {
  /// The bitmask (rows padded to bytes) of the positions group codes keep.
  static func groupBitmask(_ codes: [UInt8], rows: Int, cols: Int, code: GroupCode) -> [UInt8] {
    let rb = rowBytes(cols: cols)
    var mask = [UInt8](repeating: 0, count: rows * rb)
    let (gpb, count, perRow) = (code.groupsPerByte, code.sets.count, cols / code.group)
    for g in 0..<(rows * perRow) {
      var packed = Int(codes[g / gpb])
      for _ in 0..<(g % gpb) { packed /= count }
      let set = code.sets[packed % count]
      let (r, c0) = (g / perRow, g % perRow * code.group)
      for j in 0..<code.group where set & (1 << j) != 0 { mask[r * rb + (c0 + j) >> 3] |= 1 << UInt8((c0 + j) & 7) }
    }
    return mask
  }
}

public enum SparseCheckpointWriter {
  /// Encodes `sources` into a compressed checkpoint directory at `output` (built under a temporary name,
  /// renamed into place when complete). Shards are planned by dense size. Returns the files written.
  public static func write(
    _ sources: [TensorSource], sideFiles: [SideFile], to output: String, maxShardSize: Int?, options: CompressionOptions,
    sourceMetadata: [String: String]? = nil
  ) throws(FormatError) -> [String] {
    try AtomicDirectory.build(output) { (directory) throws(FormatError) in
      var sizes: [Int] = []
      for s in sources {
        guard let n = s.info.byteCount else { throw .validationOverflow(file: output, tensor: s.info.name) }
        sizes.append(n)
      }
      let plan = maxShardSize.map { ShardPlanner.plan(sizes: sizes, maxShardSize: $0) } ?? [Array(sources.indices)]
      var names: [String] = [], weightMap: [String: String] = [:]
      var (elements, stored, totalSize, targets, twoFour) = (0, 0, 0, 0, 0)
      for (i, members) in plan.enumerated() {
        let name = ShardPlanner.shardName(i, of: plan.count)
        let spill = try Spill(path: directory + "/.spill")
        var descriptors = JSONObject()
        for (k, m) in members.enumerated() {
          if k + 1 < members.count { sources[members[k + 1]].prefetch?() }
          let tensor: Tensor
          do { tensor = try sources[m].load() } catch let e as FormatError { throw e } catch {
            throw FormatError.io(file: output, reason: "tensor `\(sources[m].info.name)`: \(error)")
          }
          let encoded = options.format == .espalier
            ? try EspalierSparse.encode(tensor, options: options)
            : try CompressedTensorsLayout.encode(tensor, format: options.format, file: output)
          for part in encoded.parts {
            try spill.append(part)
            weightMap[part.name] = name
            totalSize += part.byteCount
          }
          if let d = encoded.descriptor { descriptors[tensor.name] = d }
          if let c = encoded.counted { elements += c.elements; stored += c.stored }
          if encoded.parts.count > 1 { targets += 1; twoFour += encoded.fitsTwoFour ? 1 : 0 }
          sources[m].release?()
        }
        // compressed-tensors files keep the source's metadata as it is; ours keeps it under source_metadata.
        var metadata = (sourceMetadata ?? [:]).merging(SafetensorsWriter.defaultMetadata) { source, _ in source }
        if options.format == .espalier {
          metadata = ["format": EspalierSparse.format, "version": EspalierSparse.version, "tensors": JSONWriter.compact(.object(descriptors))]
          if let sourceMetadata {
            let keys = sourceMetadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            metadata["source_metadata"] = JSONWriter.compact(.object(JSONObject(keys.map { ($0, .string(sourceMetadata[$0]!)) })))
          }
        }
        try spill.write(to: directory + "/" + name, metadata: metadata)
        names.append(name)
      }
      if plan.count > 1 {
        try AtomicFile.write(ShardIndex(weightMap: weightMap, totalSize: totalSize).json(), to: directory + "/" + ShardIndex.fileName)
        names.append(ShardIndex.fileName)
      }
      var sides = sideFiles
      if options.format != .espalier {
        let sparsity = elements == 0 ? 0 : Double(elements - stored) / Double(elements) * 100
        let quantization = CompressedTensorsLayout.quantizationConfig(
          format: options.format, globalSparsity: sparsity, twoFour: targets > 0 && twoFour == targets)
        if let i = sides.firstIndex(where: { $0.name == "config.json" }) {
          sides[i] = try sides[i].editingJSON { $0["quantization_config"] = quantization }
        } else {
          sides.append(.json("config.json", JSONObject([("quantization_config", quantization)])))
        }
      }
      for side in sides {
        try side.write(into: directory)
        names.append(side.name)
      }
      return names
    }
  }
}

/// A shard's parts, appended to a scratch file as they are encoded, then written as one safetensors file.
final class Spill {
  let path: String
  private let file: AtomicFile
  private var parts: [(info: TensorInfo, range: Range<Int>)] = []

  init(path: String) throws(FormatError) {
    self.path = path
    file = try AtomicFile(path: path)
  }

  func append(_ tensor: Tensor) throws(FormatError) {
    let start = file.offset
    try tensor.withUnsafeBytes { (b) throws(FormatError) in try file.write(b) }
    parts.append((tensor.info, start..<file.offset))
  }

  func write(to target: String, metadata: [String: String]) throws(FormatError) {
    try file.commit()
    defer { unlink(path) }
    let mapped = try MappedFile(path: path)
    let sources = parts.map { part in
      TensorSource(info: part.info, load: {
        try mapped.withBytes { (b) throws(FormatError) in
          try Tensor(info: part.info, bytes: UnsafeRawBufferPointer(rebasing: b[part.range]), owner: mapped)
        }
      }, release: { mapped.release(part.range) })
    }
    try SafetensorsWriter.write(sources, to: target, metadata: metadata)
  }
}
