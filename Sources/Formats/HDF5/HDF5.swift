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
  /// Silences libhdf5's own error printing (we report errors ourselves), and keeps libhdf5 from closing
  /// what is still open when the process exits: on a corrupt file that close can fault, outside any
  /// guard, after the tool has finished (the fuzzer saw it). Files are read-only except the writer's,
  /// which closes its file before renaming it into place. Idempotent; must come before any other call.
  static let quiet: Void = {
    _ = H5dont_atexit()
    _ = H5Eset_auto2(espalier_H5E_DEFAULT(), nil, nil)
  }()

  /// ESPALIER_HDF5_GUARD=off turns the crash guard and the attribute watchdog off: the fuzzer sets it, so
  /// that faults inside libhdf5 reach its sanitizers and its own timeouts (SIGALRM) keep working.
  /// (A variable so that the HDF5 fuzz target can turn them on in the child process it reads each input in.)
  nonisolated(unsafe) static var guardsEnabled: Bool =
    getenv("ESPALIER_HDF5_GUARD").map { String(cString: $0) != "off" } ?? true

  /// Whether a libhdf5 call is running under the crash guard now.
  static var guardArmed: Bool { espalier_crash_armed().pointee > 0 }

  /// The line the guard prints when libhdf5 faults (empty before the first guarded call).
  static var guardMessage: String { String(cString: espalier_crash_message()) }

  /// How long a watched libhdf5 step may take: reading one object's metadata takes microseconds.
  /// (ESPALIER_HDF5_WATCH_SECONDS sets another: the fuzzer's 2, so that inputs that loop cost it little.)
  static let watchSeconds: UInt32 = getenv("ESPALIER_HDF5_WATCH_SECONDS").flatMap { UInt32(String(cString: $0)) }.map { max(1, $0) } ?? 10
  /// The messages of the watched steps now running, innermost last.
  nonisolated(unsafe) private static var watching: [(message: String, seconds: UInt32)] = []

  /// Runs libhdf5 metadata calls under a watchdog: a corrupt file can send libhdf5 into a loop (a global
  /// heap that points at itself), and after `seconds` without finishing this step the process ends
  /// with exit 2 and a line naming the file and `what` (CHDF5/shim.h). Steps nest; each gets the full
  /// time, and the enclosing step's time starts again when it ends.
  static func watched<R, E: Error>(
    _ what: @autoclosure () -> String, file: String, seconds: UInt32 = watchSeconds, _ body: () throws(E) -> R
  ) throws(E) -> R {
    guard guardsEnabled else { return try body() }
    let message = "error: \(file): libhdf5 did not finish \(what()) within \(seconds) s (the file is corrupt)\n"
    watching.append((message, seconds))
    espalier_watch_begin(message, seconds)
    defer {
      watching.removeLast()
      if let outer = watching.last { espalier_watch_begin(outer.message, outer.seconds) } else { espalier_watch_end() }
    }
    return try body()
  }

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
    // libhdf5 allocates what corrupt metadata says (8 GB for one global-heap object): reading metadata
    // runs under an address-space cap, so such an allocation fails inside libhdf5 (an error) instead of
    // growing the process.
    let headroom = 1 << 30
    file = try HDF5Library.guarded(path) { () throws(FormatError) in
      try HDF5Library.watched("opening it", file: path) { () throws(FormatError) in
        try MemoryLimit.capped(headroom: headroom) { () throws(FormatError) in try Self.open(path) }
      }
    }
    try HDF5Library.guarded(path) { () throws(FormatError) in
      try HDF5Library.watched("listing its datasets", file: path) { () throws(FormatError) in
        try MemoryLimit.capped(headroom: headroom) { () throws(FormatError) in try scan() }
      }
    }
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
      let dataset = try HDF5Library.watched("reading the metadata of dataset `/\(name)`", file: path) {
        () throws(FormatError) in try describe(name)
      }
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
        try read(d, dataset.id, dcpl: dcpl.id, type: type.id, byteCount: byteCount, into: storage.pointer)
      }
    }
    return try Tensor(info: d.info, bytes: storage.bytes, owner: storage)
  }

  /// Reads a dataset's bytes: chunked ones from their raw chunks (HDF5Chunks), contiguous ones from the
  /// file at the dataset's offset, so that no byte libhdf5 did not read from the file reaches a tensor
  /// (libhdf5 1.10 copies past short chunks). Compact datasets (bytes inside the header, checked to be
  /// exactly their size) and types whose bits need converting go through H5Dread.
  private func read(
    _ d: HDF5Dataset, _ dataset: hid_t, dcpl: hid_t, type: hid_t, byteCount: Int, into output: UnsafeMutableRawPointer
  ) throws(FormatError) {
    let elementSize = H5Tget_size(type)
    let bytes = HDF5Types.storedBytes(type, as: d.memoryType.id)
    let layout = H5Pget_layout(dcpl)
    let fileSize = FileSystem.size(path)
    // A read takes time in proportion to its bytes: the watchdog allows 1 s more per 16 MB.
    let seconds = UInt32(clamping: Int(HDF5Library.watchSeconds) + byteCount / 16_000_000)
    if layout == H5D_CHUNKED {
      try HDF5Library.watched("reading dataset `\(d.path)`", file: path, seconds: seconds) { () throws(FormatError) in
        try HDF5Chunks.read(
          dataset, dcpl: dcpl, shape: d.info.shape, elementSize: elementSize, name: d.path, file: path, fileSize: fileSize,
          into: bytes == .converted ? nil : output)
      }
    } else if layout == H5D_CONTIGUOUS && bytes != .converted {
      let offset = H5Dget_offset(dataset)
      guard offset != haddr_t.max, case (let end, false) = Int(clamping: offset).addingReportingOverflow(byteCount), end <= fileSize else {
        throw .hdf5(file: path, reason: "dataset `\(d.path)` lies outside the file (\(byteCount) bytes at offset \(offset))")
      }
      try FileSystem.read(path, offset: Int(offset), count: byteCount, into: output)
    }
    if bytes == .converted || (layout != H5D_CHUNKED && layout != H5D_CONTIGUOUS) {
      let status = HDF5Library.watched("reading dataset `\(d.path)`", file: path, seconds: seconds) {
        H5Dread(dataset, d.memoryType.id, espalier_H5S_ALL(), espalier_H5S_ALL(), espalier_H5P_DEFAULT(), output)
      }
      guard status >= 0 else { throw .hdf5(file: path, reason: "libhdf5 cannot read dataset `\(d.path)` (the file is corrupt)") }
      return
    }
    if bytes == .swapped { Self.swapBytes(output, count: byteCount / elementSize, elementSize: elementSize) }
  }

  /// Reverses each element's bytes in place (a big-endian dataset read into little-endian memory).
  static func swapBytes(_ buffer: UnsafeMutableRawPointer, count: Int, elementSize: Int) {
    let bytes = buffer.assumingMemoryBound(to: UInt8.self)
    for e in 0..<count {
      let base = bytes + e * elementSize
      var (i, j) = (0, elementSize - 1)
      while i < j {
        (base[i], base[j]) = (base[j], base[i])
        i += 1
        j -= 1
      }
    }
  }

  public func release(_ name: String) {}
  public func sideFiles() -> [SideFile] { [] }

  // MARK: Walking the file

  private func walk(
    _ group: hid_t, prefix: String, into found: inout [String], visited: inout Set<UInt64>, depth: Int
  ) throws(FormatError) {
    guard depth < 64 else { throw .hdf5(file: path, reason: "groups nested deeper than 64 at `\(prefix)`") }
    let listed = try HDF5Library.watched("listing group `/\(prefix)`", file: path) { () throws(FormatError) in
      try links(group, prefix: prefix)
    }
    for (name, type) in listed {
      let full = prefix.isEmpty ? name : prefix + "/" + name
      switch type {
      case H5L_TYPE_HARD: break
      case H5L_TYPE_SOFT: throw .hdf5(file: path, reason: "`/\(full)` is a soft link; links are not followed")
      case H5L_TYPE_EXTERNAL: throw .hdf5(file: path, reason: "`/\(full)` is an external link to another file; refused")
      default: throw .hdf5(file: path, reason: "`/\(full)` is a user-defined link; refused")
      }
      var object = H5O_info_t()
      let inspected = HDF5Library.watched("inspecting `/\(full)`", file: path) {
        H5Oget_info_by_name2(group, name, &object, UInt32(H5O_INFO_BASIC), espalier_H5P_DEFAULT())
      }
      guard inspected >= 0 else {
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
    let grid = try HDF5Chunks.Grid(dataset.id, dcpl: dcpl.id, shape: shape) { reason in
      .hdf5(file: path, reason: "dataset `/\(name)` \(reason)")
    }
    _ = try grid?.requireWhole { reason in .hdf5(file: path, reason: "dataset `/\(name)` \(reason)") }
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
