// GGUF out (formats.md §4.1): version 3, little-endian; the metadata in the order given, the tensor
// infos (dims ne0 first), zero padding to the alignment, then each tensor's bytes padded to the
// alignment (the last one too, as gguf-py does). Everything the reader (and ggml's gguf.cpp) rejects is
// refused here before a byte is written: empty or duplicate keys, tensor names of 64 bytes or more,
// duplicate tensors, more than 4 dims, rows that are not whole blocks. Tensors are produced one at a
// time by the caller, so memory stays at O(largest tensor); the file appears only when complete.

/// One tensor to write: its GGUF name, dims (ne0 first), type, and a producer of exactly its bytes.
public struct GGUFTensorOut {
  public var name: String
  public var dims: [Int]
  public var type: GGMLType
  /// Calls `emit` with the tensor's bytes, in storage order, in as many pieces as it likes.
  public var produce: (_ emit: (UnsafeRawBufferPointer) throws(FormatError) -> Void) throws(FormatError) -> Void

  public init(
    name: String, dims: [Int], type: GGMLType,
    produce: @escaping (_ emit: (UnsafeRawBufferPointer) throws(FormatError) -> Void) throws(FormatError) -> Void
  ) {
    self.name = name
    self.dims = dims
    self.type = type
    self.produce = produce
  }

  /// Bytes the tensor takes, or nil when a row is not whole blocks or the size overflows.
  public var byteCount: Int? {
    guard let row = type.rowBytes(dims.first ?? 1) else { return nil }
    var total = row
    for d in dims.dropFirst() {
      let (p, o) = total.multipliedReportingOverflow(by: d)
      if o { return nil }
      total = p
    }
    return total
  }
}

public enum GGUFWriter {
  /// The GGUF value type id of a metadata value (formats.md §4.1).
  static func typeID(_ v: GGUFValue) -> UInt32 {
    switch v {
    case .uint8: return 0
    case .int8: return 1
    case .uint16: return 2
    case .int16: return 3
    case .uint32: return 4
    case .int32: return 5
    case .float32: return 6
    case .bool: return 7
    case .string: return 8
    case .array: return 9
    case .uint64: return 10
    case .int64: return 11
    case .float64: return 12
    }
  }

  struct Buffer {
    var bytes: [UInt8] = []
    mutating func integer<T: FixedWidthInteger>(_ x: T) {
      withUnsafeBytes(of: x.littleEndian) { bytes.append(contentsOf: $0) }
    }
    mutating func string(_ s: String) {
      integer(UInt64(s.utf8.count))
      bytes.append(contentsOf: s.utf8)
    }
    mutating func value(_ v: GGUFValue) {
      switch v {
      case .uint8(let x): integer(x)
      case .int8(let x): integer(x)
      case .uint16(let x): integer(x)
      case .int16(let x): integer(x)
      case .uint32(let x): integer(x)
      case .int32(let x): integer(x)
      case .float32(let x): integer(x.bitPattern)
      case .bool(let x): integer(UInt8(x ? 1 : 0))
      case .string(let s): string(s)
      case .uint64(let x): integer(x)
      case .int64(let x): integer(x)
      case .float64(let x): integer(x.bitPattern)
      case .array(let elementType, let items):
        integer(elementType)
        integer(UInt64(items.count))
        for item in items { value(item) }
      }
    }
  }

  /// The header: magic, version, counts, metadata, tensor infos and the padding before the data. Checks
  /// everything a reader would reject. Returns the header and each tensor's byte count.
  static func header(
    metadata: [(key: String, value: GGUFValue)], tensors: [GGUFTensorOut], alignment: Int, path: String
  ) throws(FormatError) -> (header: [UInt8], sizes: [Int]) {
    func refuse(_ problem: GGUFProblem) -> FormatError { .gguf(file: path, problem: problem) }
    var b = Buffer()
    b.integer(UInt32(0x4655_4747))
    b.integer(UInt32(3))
    b.integer(UInt64(tensors.count))
    b.integer(UInt64(metadata.count))
    var keys = Set<String>()
    for (key, value) in metadata {
      guard !key.isEmpty else { throw refuse(.emptyKey) }
      guard keys.insert(key).inserted else { throw refuse(.duplicateKey(key)) }
      if key == "general.alignment" {
        guard case .uint32(let a) = value else { throw refuse(.alignmentNotUInt32) }
        guard Int(a) == alignment else { throw FormatError.io(file: path, reason: "general.alignment \(a) differs from the alignment written, \(alignment)") }
      }
      b.string(key)
      b.integer(typeID(value))
      b.value(value)
    }
    var names = Set<String>()
    var sizes: [Int] = []
    var offset = 0
    for t in tensors {
      guard t.name.utf8.count < 64 else { throw refuse(.tensorNameTooLong(t.name)) }
      guard names.insert(t.name).inserted else { throw refuse(.duplicateTensor(t.name)) }
      guard t.dims.count <= 4 else { throw refuse(.tooManyDimensions(tensor: t.name, count: UInt32(t.dims.count))) }
      if let bad = t.dims.first(where: { $0 < 0 }) { throw refuse(.invalidDimension(tensor: t.name, value: Int64(bad))) }
      let ne0 = t.dims.first ?? 1
      guard ne0 % t.type.blockSize == 0 else { throw refuse(.rowNotWholeBlocks(tensor: t.name, ne0: ne0, blockSize: t.type.blockSize)) }
      guard let size = t.byteCount, let padded = GGUFParser.padded(size, alignment) else {
        throw refuse(.elementCountOverflow(tensor: t.name))
      }
      b.string(t.name)
      b.integer(UInt32(t.dims.count))
      for d in t.dims { b.integer(UInt64(d)) }
      b.integer(t.type.id)
      b.integer(UInt64(offset))
      sizes.append(size)
      offset += padded
    }
    let padding = (alignment - b.bytes.count % alignment) % alignment
    b.bytes.append(contentsOf: repeatElement(0, count: padding))
    return (b.bytes, sizes)
  }

  /// Writes the file (atomically: a temporary name, renamed when complete). `alignment` must be a power of
  /// two; any value other than the default 32 is also written as `general.alignment`.
  public static func write(
    metadata: [(key: String, value: GGUFValue)], tensors: [GGUFTensorOut], to path: String,
    alignment: Int = GGUFFile.defaultAlignment
  ) throws(FormatError) {
    precondition(alignment > 0 && alignment & (alignment - 1) == 0, "GGUF alignment must be a power of two")
    var entries = metadata
    if alignment != GGUFFile.defaultAlignment, !entries.contains(where: { $0.key == "general.alignment" }) {
      entries.append((key: "general.alignment", value: .uint32(UInt32(alignment))))
    }
    let (header, sizes) = try header(metadata: entries, tensors: tensors, alignment: alignment, path: path)
    let file = try AtomicFile(path: path)
    do throws(FormatError) {
      try file.write(header)
      let zeros = [UInt8](repeating: 0, count: alignment)
      for (t, size) in zip(tensors, sizes) {
        let start = file.offset
        try t.produce { (piece) throws(FormatError) in
          guard file.offset - start + piece.count <= size else {
            throw FormatError.io(file: path, reason: "tensor `\(t.name)`: more bytes than its \(t.type.name) shape \(t.dims) holds")
          }
          try file.write(piece)
        }
        guard file.offset - start == size else {
          throw FormatError.io(file: path, reason: "tensor `\(t.name)`: \(file.offset - start) bytes written, its shape needs \(size)")
        }
        let padding = (alignment - size % alignment) % alignment
        if padding > 0 { try file.write(Array(zeros[0..<padding])) }
      }
      try file.commit()
    } catch {
      file.discard()
      throw error
    }
  }
}
