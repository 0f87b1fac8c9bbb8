// A safetensors checkpoint laid out before any tensor exists, then filled in any order: the shards, their
// headers and every tensor's offset follow from the tensors' names, dtypes and shapes alone (the same
// functions as the streaming writer, so the bytes are identical), and each tensor is written at its place
// when its producer has it. Engine tools that finish tensors in an order other than the file's (a pruner
// goes block by block; files are sorted by name, so block 10 comes before block 2) hold one block, not
// the model. The directory's files appear only at `commit`, each atomically, the index last.

public final class SafetensorsPlacedWriter {
  struct Slot {
    var shard: Int
    var position: Int
    var info: TensorInfo
    var written = false
  }
  public let directory: String
  private var files: [AtomicFile] = []
  private var names: [String] = []
  private var slots: [String: Slot] = [:]
  private var index: ShardIndex?
  private var finished = false
  /// Each shard's tensors in buffer order and the header length its data was placed after.
  private var ordered: [[TensorInfo]] = []
  private var headerLengths: [Int] = []

  /// Lays out `infos` (in state-dict order, which decides the shards) under `directory` (which must
  /// exist): shards of at most `maxShardSize` bytes (nil: one file) plus the index when there are several.
  public init(_ infos: [TensorInfo], directory: String, maxShardSize: Int?, metadata: [String: String]? = SafetensorsWriter.defaultMetadata) throws(FormatError) {
    self.directory = directory
    var sizes: [Int] = []
    for info in infos {
      guard let n = info.byteCount else { throw .validationOverflow(file: directory, tensor: info.name) }
      sizes.append(n)
    }
    let plan = maxShardSize.map { ShardPlanner.plan(sizes: sizes, maxShardSize: $0) } ?? [Array(infos.indices)]
    let dir = directory.hasSuffix("/") ? directory : directory + "/"
    var weightMap: [String: String] = [:]
    do throws(FormatError) {
      for (shard, members) in plan.enumerated() {
        let name = ShardPlanner.shardName(shard, of: plan.count)
        let ordered = SafetensorsWriter.bufferOrder(members.map { infos[$0] })
        let header = try SafetensorsWriter.header(for: ordered, metadata: metadata, file: dir + name)
        let file = try AtomicFile(path: dir + name)
        files.append(file)
        names.append(name)
        var length = UInt64(header.count).littleEndian
        try withUnsafeBytes(of: &length) { (b) throws(FormatError) in try file.write(b) }
        try file.write(header)
        self.ordered.append(ordered)
        headerLengths.append(header.count)
        var position = 8 + header.count
        for info in ordered {
          slots[info.name] = Slot(shard: shard, position: position, info: info)
          weightMap[info.name] = name
          position += info.byteCount!
        }
        try file.resize(to: position)
      }
    } catch {
      discard()
      throw error
    }
    if plan.count > 1 { index = ShardIndex(weightMap: weightMap, totalSize: sizes.reduce(0, +)) }
  }

  deinit { if !finished { discard() } }

  /// The dtype and shape the layout expects for `name` (nil: not in this checkpoint).
  public func info(_ name: String) -> TensorInfo? { slots[name]?.info }

  /// Writes a tensor at its place; it must match the announced dtype and shape, once.
  public func put(_ tensor: Tensor) throws(FormatError) {
    let slot = try unwritten(tensor, dtype: tensor.dtype)
    let file = files[slot.shard]
    try tensor.withUnsafeBytes { (b) throws(FormatError) in try file.write(b, at: slot.position) }
    slots[tensor.name]!.written = true
  }

  /// Writes `tensor` at its place in slices of whole rows (dimension 0) of about `sliceBytes` each,
  /// converted to the planned dtype, calling `sliceDone` with each slice's byte range in `tensor` once it
  /// is written, so that a mapped source can drop those pages: a tensor larger than memory (an 8B
  /// model's embedding) passes through one slice-sized buffer. Tensors whose rows are not whole bytes
  /// in both dtypes go in one piece.
  public func put(_ tensor: Tensor, sliceBytes: Int = 16 << 20, sliceDone: (Range<Int>) -> Void) throws(FormatError) {
    let slot = try unwritten(tensor, dtype: nil)
    let target = slot.info.dtype
    let rows = tensor.shape.first ?? 1
    let rowElements = tensor.shape.dropFirst().reduce(1, *)
    guard tensor.shape.count >= 2, rows > 0, let sourceRow = tensor.dtype.byteCount(elements: rowElements),
      let targetRow = target.byteCount(elements: rowElements), sourceRow > 0, targetRow > 0
    else {
      try put(tensor.dtype == target ? tensor : try tensor.converted(to: target))
      sliceDone(0..<tensor.byteCount)
      return
    }
    let step = max(1, sliceBytes / max(sourceRow, targetRow))
    try tensor.withUnsafeBytes { (bytes) throws(FormatError) in
      for first in stride(from: 0, to: rows, by: step) {
        let count = min(step, rows - first)
        let source = UnsafeRawBufferPointer(rebasing: bytes[(first * sourceRow)..<((first + count) * sourceRow)])
        let position = slot.position + first * targetRow
        if tensor.dtype == target {
          try files[slot.shard].write(source, at: position)
        } else {
          let slice = try Tensor(
            info: TensorInfo(name: tensor.name, dtype: tensor.dtype, shape: [count] + tensor.shape.dropFirst()), bytes: source, owner: nil)
          try slice.converted(to: target).withUnsafeBytes { (b) throws(FormatError) in try files[slot.shard].write(b, at: position) }
        }
        sliceDone((first * sourceRow)..<((first + count) * sourceRow))
      }
    }
    slots[tensor.name]!.written = true
  }

  /// The slot of a tensor about to be written: planned, not yet written, of the planned shape (and dtype,
  /// unless the writer converts).
  private func unwritten(_ tensor: Tensor, dtype: DType?) throws(FormatError) -> Slot {
    guard let slot = slots[tensor.name] else {
      throw .io(file: directory, reason: "tensor `\(tensor.name)` is not in the planned layout")
    }
    guard dtype.map({ $0 == slot.info.dtype }) ?? true, tensor.shape == slot.info.shape else {
      throw .tensorInvalidInfo(file: directory + "/" + names[slot.shard], tensor: tensor.name)
    }
    guard !slot.written else { throw .duplicateKey(file: directory + "/" + names[slot.shard], key: tensor.name) }
    return slot
  }

  /// Whether `name` has been written.
  public func isWritten(_ name: String) -> Bool { slots[name]?.written ?? false }

  /// Renames every shard into place (the index last) once all tensors are written; returns the file names.
  /// `metadata` replaces the planned metadata when given (facts known only at the end, such as the
  /// measured sparsity): a header of the planned length is rewritten in place; one of another length
  /// means the shard's data is copied once behind the new header.
  public func commit(metadata: [String: String]?? = nil) throws(FormatError) -> [String] {
    let missing = slots.values.filter { !$0.written }.map(\.info.name).sorted()
    guard missing.isEmpty else {
      discard()
      throw .io(file: directory, reason: "\(missing.count) tensors were never written (first: `\(missing[0])`)")
    }
    let dir = directory.hasSuffix("/") ? directory : directory + "/"
    do throws(FormatError) {
      if let metadata {
        for shard in files.indices { try rewriteHeader(shard, metadata: metadata, path: dir + names[shard]) }
      }
      for file in files { try file.commit() }
      var written = names
      if let index {
        try AtomicFile.write(index.json(), to: dir + ShardIndex.fileName)
        written.append(ShardIndex.fileName)
      }
      finished = true
      return written
    } catch {
      discard()
      throw error
    }
  }

  private func rewriteHeader(_ shard: Int, metadata: [String: String]?, path: String) throws(FormatError) {
    let header = try SafetensorsWriter.header(for: ordered[shard], metadata: metadata, file: path)
    var length = UInt64(header.count).littleEndian
    let old = files[shard]
    if header.count == headerLengths[shard] {
      try withUnsafeBytes(of: &length) { (b) throws(FormatError) in try old.write(b, at: 0) }
      let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: header.count, alignment: 1)
      defer { bytes.deallocate() }
      bytes.copyBytes(from: header)
      try old.write(UnsafeRawBufferPointer(bytes), at: 8)
      return
    }
    // The data moves: copy it behind the new header, in chunks, into a fresh temporary file.
    let dataStart = 8 + headerLengths[shard]
    let dataBytes = ordered[shard].reduce(0) { $0 + $1.byteCount! }
    let source = try MappedFile(path: old.temporaryPath)
    let file = try AtomicFile(path: path)
    files[shard] = file
    old.discard()
    try withUnsafeBytes(of: &length) { (b) throws(FormatError) in try file.write(b) }
    try file.write(header)
    try source.withBytes { (bytes) throws(FormatError) in
      let chunk = 16 << 20
      for start in stride(from: 0, to: dataBytes, by: chunk) {
        let range = (dataStart + start)..<(dataStart + min(dataBytes, start + chunk))
        try file.write(UnsafeRawBufferPointer(rebasing: bytes[range]))
        source.release(range)
      }
    }
    headerLengths[shard] = header.count
  }

  /// Abandons every shard not yet committed.
  public func discard() {
    finished = true
    for file in files { file.discard() }
  }
}
