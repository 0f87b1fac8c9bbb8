// HDF5 checkpoints over libhdf5 (formats.md §5): one dataset per tensor, named by the tensor (dots kept),
// as Espalier writes them; Keras legacy `layer_names`/`weight_names` files and Keras 3 `.weights.h5`
// files are read well enough to list and extract their tensors (named by their HDF5 path).
//
// Types: IEEE F32/F64, integers, F16 (a custom 2-byte float: libhdf5 1.10 has no predefined half), BF16
// as a 2-byte opaque or uint16 with the attribute dtype="bfloat16" (as Keras 3 writes it) or a custom
// 2-byte float with 8 exponent bits. Chunked and gzip+shuffle datasets are read by libhdf5 itself.
// A safe reader: soft and external links, external and virtual datasets, and decompression bombs are
// rejected, as Keras' safe loading does. HDF5 is not thread-safe; use one file from one thread.

import CHDF5

#if canImport(Glibc)
  import Glibc
#endif

/// An open libhdf5 identifier, closed with the matching H5*close when dropped.
final class H5ID {
  let id: hid_t
  private let closer: (hid_t) -> herr_t
  init?(_ id: hid_t, _ closer: @escaping (hid_t) -> herr_t) {
    guard id >= 0 else { return nil }
    self.id = id
    self.closer = closer
  }
  deinit { _ = closer(id) }
}

enum HDF5Library {
  /// Silences libhdf5's own error printing (we report errors ourselves). Idempotent.
  static let quiet: Void = { _ = H5Eset_auto2(espalier_H5E_DEFAULT(), nil, nil) }()

  /// ESPALIER_HDF5_GUARD=off turns the crash guard and the attribute watchdog off: the fuzzer sets it, so
  /// that faults inside libhdf5 reach its sanitizers and its own timeouts (SIGALRM) keep working.
  static let guardsEnabled: Bool = getenv("ESPALIER_HDF5_GUARD").map { String(cString: $0) != "off" } ?? true

  /// Runs libhdf5 calls on `file` with the crash guard armed (CHDF5/shim.h): a fault inside libhdf5 on
  /// a corrupt file ends the process with exit 2 and a line naming the file, not with a signal.
  static func guarded<R>(_ file: String, _ body: () throws(FormatError) -> R) throws(FormatError) -> R {
    guard guardsEnabled else { return try body() }
    espalier_crash_guard_install()
    espalier_crash_guard_arm("error: \(file): libhdf5 crashed while reading it (the file is corrupt)\n")
    defer { espalier_crash_guard_disarm() }
    return try body()
  }
}

/// A tensor's dataset and how its bytes are read into memory.
struct HDF5Dataset {
  var path: String
  var info: TensorInfo
  /// The memory type to read with (native for standard types; a little-endian 2-byte type otherwise).
  var memoryType: H5ID
}

public final class HDF5Checkpoint: CheckpointReader, @unchecked Sendable {
  public let path: String
  public private(set) var infos: [TensorInfo] = []
  /// Things a user should know: skipped optimizer state, the layout recognised.
  public private(set) var notes: [String] = []
  private let file: H5ID
  private var datasets: [String: HDF5Dataset] = [:]

  public init(path: String) throws(FormatError) {
    HDF5Library.quiet
    self.path = path
    file = try HDF5Library.guarded(path) { () throws(FormatError) in try Self.open(path) }
    try HDF5Library.guarded(path) { () throws(FormatError) in try scan() }
  }

  private static func open(_ path: String) throws(FormatError) -> H5ID {
    guard let file = H5ID(H5Fopen(path, espalier_H5F_ACC_RDONLY(), espalier_H5P_DEFAULT()), H5Fclose) else {
      throw .hdf5(file: path, reason: "cannot open as HDF5")
    }
    return file
  }

  private func scan() throws(FormatError) {
    guard let root = H5ID(H5Gopen2(file.id, "/", espalier_H5P_DEFAULT()), H5Gclose) else {
      throw .hdf5(file: path, reason: "cannot open the root group")
    }
    var found: [String] = []
    var visited = Set<UInt64>()
    try walk(root.id, prefix: "", into: &found, visited: &visited, depth: 0)

    // Keras 3 .weights.h5 keeps optimizer state beside the weights: not model tensors.
    if found.contains(where: { $0.hasPrefix("layers/") }) {
      let optimizer = found.filter { $0.hasPrefix("optimizer/") }
      if !optimizer.isEmpty { notes.append("skipped \(optimizer.count) optimizer tensors (Keras 3 layout)") }
      found.removeAll { $0.hasPrefix("optimizer/") }
    }
    let ordered = try kerasOrder(root.id, found)
    for name in ordered {
      let dataset = try describe(name)
      datasets[name] = dataset
      infos.append(dataset.info)
    }
  }

  public func tensor(_ name: String) throws(FormatError) -> Tensor {
    guard let d = datasets[name] else { throw .tensorNotFound(file: path, tensor: name) }
    guard let byteCount = d.info.byteCount else { throw .validationOverflow(file: path, tensor: name) }
    let storage = try OwnedBytes.allocate(byteCount, file: path, what: "dataset `\(d.path)`")
    if byteCount > 0 {
      try HDF5Library.guarded(path) { () throws(FormatError) in
        guard let dataset = H5ID(H5Dopen2(file.id, d.path, espalier_H5P_DEFAULT()), H5Dclose),
          let dcpl = H5ID(H5Dget_create_plist(dataset.id), H5Pclose),
          let type = H5ID(H5Dget_type(dataset.id), H5Tclose)
        else { throw .hdf5(file: path, reason: "cannot open dataset `\(d.path)`") }
        // The stored chunks undo to exactly their size (libhdf5 does not check; see HDF5Chunks).
        try HDF5Chunks.check(
          dataset.id, dcpl: dcpl.id, shape: d.info.shape, elementSize: H5Tget_size(type.id), name: d.path, file: path,
          fileSize: FileSystem.size(path))
        guard H5Dread(dataset.id, d.memoryType.id, espalier_H5S_ALL(), espalier_H5S_ALL(), espalier_H5P_DEFAULT(), storage.pointer) >= 0 else {
          let checksummed = HDF5Chunks.filters(dcpl.id).contains { $0.id == HDF5Chunks.fletcher32 }
          throw .hdf5(
            file: path,
            reason: checksummed
              ? "dataset `\(d.path)` fails its Fletcher-32 checksum: the file is corrupt"
              : "libhdf5 cannot read dataset `\(d.path)` (its chunks passed Espalier's checks; the file is corrupt)")
        }
      }
    }
    return try Tensor(info: d.info, bytes: storage.bytes, owner: storage)
  }

  public func release(_ name: String) {}
  public func sideFiles() -> [SideFile] { [] }

  // MARK: Walking the file

  private func walk(
    _ group: hid_t, prefix: String, into found: inout [String], visited: inout Set<UInt64>, depth: Int
  ) throws(FormatError) {
    guard depth < 64 else { throw .hdf5(file: path, reason: "groups nested deeper than 64 at `\(prefix)`") }
    for (name, type) in try links(group, prefix: prefix) {
      let full = prefix.isEmpty ? name : prefix + "/" + name
      switch type {
      case H5L_TYPE_HARD: break
      case H5L_TYPE_SOFT: throw .hdf5(file: path, reason: "`/\(full)` is a soft link; links are not followed")
      case H5L_TYPE_EXTERNAL: throw .hdf5(file: path, reason: "`/\(full)` is an external link to another file; refused")
      default: throw .hdf5(file: path, reason: "`/\(full)` is a user-defined link; refused")
      }
      var object = H5O_info_t()
      guard H5Oget_info_by_name2(group, name, &object, UInt32(H5O_INFO_BASIC), espalier_H5P_DEFAULT()) >= 0 else {
        throw .hdf5(file: path, reason: "cannot inspect `/\(full)`")
      }
      guard visited.insert(UInt64(object.addr)).inserted else { continue }
      if object.type == H5O_TYPE_GROUP {
        guard let child = H5ID(H5Gopen2(group, name, espalier_H5P_DEFAULT()), H5Gclose) else {
          throw .hdf5(file: path, reason: "cannot open group `/\(full)`")
        }
        try walk(child.id, prefix: full, into: &found, visited: &visited, depth: depth + 1)
      } else if object.type == H5O_TYPE_DATASET {
        found.append(full)
      }
    }
  }

  /// The group's links in name order with their types, in one pass (H5Literate): looking each up by
  /// index costs a walk of the group per link, quadratic in a file of many small datasets.
  private func links(_ group: hid_t, prefix: String) throws(FormatError) -> [(String, H5L_type_t)] {
    final class Collected { var links: [(String, H5L_type_t)] = [] }
    let collected = Collected()
    var index: hsize_t = 0
    let status = withExtendedLifetime(collected) {
      H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &index, { _, name, info, data in
        guard let name, let info, let data else { return -1 }
        let box = Unmanaged<Collected>.fromOpaque(data).takeUnretainedValue()
        box.links.append((String(cString: name), info.pointee.type))
        return 0
      }, Unmanaged.passUnretained(collected).toOpaque())
    }
    guard status >= 0 else { throw .hdf5(file: path, reason: "cannot list group `/\(prefix)`") }
    return collected.links
  }

  /// Keras legacy files list layers in `layer_names` (on the root or on /model_weights) and each layer's
  /// weights in `weight_names`; those tensors come first, in that order. Everything else follows by name.
  private func kerasOrder(_ root: hid_t, _ found: [String]) throws(FormatError) -> [String] {
    var base = ""
    var layers = HDF5Attributes.strings(root, "layer_names", file: path)
    if layers == nil, let weights = H5ID(H5Gopen2(root, "model_weights", espalier_H5P_DEFAULT()), H5Gclose) {
      layers = HDF5Attributes.strings(weights.id, "layer_names", file: path)
      base = "model_weights/"
    }
    guard let layers else { return found }
    notes.append("Keras legacy layout: \(layers.count) layers")
    var ordered: [String] = []
    let present = Set(found)
    var placed = Set<String>()
    for layer in layers {
      guard let group = H5ID(H5Gopen2(root, base + layer, espalier_H5P_DEFAULT()), H5Gclose) else { continue }
      for weight in HDF5Attributes.strings(group.id, "weight_names", file: path) ?? [] {
        let name = base + layer + "/" + weight
        if present.contains(name) && placed.insert(name).inserted { ordered.append(name) }
      }
    }
    return ordered + found.filter { !placed.contains($0) }
  }

  // MARK: Datasets

  private func describe(_ name: String) throws(FormatError) -> HDF5Dataset {
    guard let dataset = H5ID(H5Dopen2(file.id, name, espalier_H5P_DEFAULT()), H5Dclose),
      let space = H5ID(H5Dget_space(dataset.id), H5Sclose),
      let type = H5ID(H5Dget_type(dataset.id), H5Tclose),
      let dcpl = H5ID(H5Dget_create_plist(dataset.id), H5Pclose)
    else { throw .hdf5(file: path, reason: "cannot open dataset `/\(name)`") }
    if H5Pget_layout(dcpl.id) == H5D_VIRTUAL {
      throw .hdf5(file: path, reason: "dataset `/\(name)` is a virtual dataset; refused")
    }
    if H5Pget_external_count(dcpl.id) > 0 {
      throw .hdf5(file: path, reason: "dataset `/\(name)` stores its data in external files; refused")
    }
    let rank = Int(H5Sget_simple_extent_ndims(space.id))
    guard rank >= 0 else { throw .hdf5(file: path, reason: "dataset `/\(name)` has no simple dataspace") }
    var dims = [hsize_t](repeating: 0, count: max(rank, 1))
    _ = H5Sget_simple_extent_dims(space.id, &dims, nil)
    let shape = dims.prefix(rank).map { Int(clamping: $0) }
    let attribute = HDF5Attributes.string(dataset.id, "dtype", file: path)
    let (dtype, memoryType) = try HDF5Types.logicalType(type.id, dtypeAttribute: attribute, dataset: name, file: path)
    let info = TensorInfo(name: name, dtype: dtype, shape: shape)
    guard let declared = info.byteCount else { throw .validationOverflow(file: path, tensor: name) }
    if H5Pget_layout(dcpl.id) == H5D_CHUNKED, !shape.contains(0) {
      var chunkDims = [hsize_t](repeating: 0, count: max(rank, 1)), stored: hsize_t = 0, expected = 1
      if H5Pget_chunk(dcpl.id, Int32(rank), &chunkDims) == Int32(rank), chunkDims.prefix(rank).allSatisfy({ $0 > 0 }),
        H5Dget_num_chunks(dataset.id, space.id, &stored) >= 0
      {
        for (d, c) in zip(shape, chunkDims) { expected = expected.multipliedReportingOverflow(by: (d + Int(c) - 1) / Int(c)).partialValue }
        if Int(stored) != expected {
          throw .hdf5(file: path, reason: "dataset `/\(name)` stores \(stored) of its \(expected) chunks (a weight must be written whole)")
        }
      }
    }
    // A "bomb": a tiny compressed dataset that expands past 4 GiB and a thousandfold.
    let stored = Int(clamping: H5Dget_storage_size(dataset.id))
    // Unfiltered layouts store exactly the declared bytes: anything else would be read past its storage.
    let layout = H5Pget_layout(dcpl.id)
    if (layout == H5D_COMPACT || layout == H5D_CONTIGUOUS) && declared > 0 && stored != declared {
      throw .hdf5(file: path, reason: "dataset `/\(name)` declares \(declared) bytes but stores \(stored) (a weight must be written whole)")
    }
    if declared > 1 << 32 && declared > 1000 * max(stored, 1) {
      throw .hdf5(file: path, reason: "dataset `/\(name)` declares \(declared) bytes from \(stored) stored; refused")
    }
    return HDF5Dataset(path: "/" + name, info: info, memoryType: memoryType)
  }
}
