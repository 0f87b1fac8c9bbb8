// GGUF: a strict reader over mmap (formats.md §4.1-4.2).
//
// Layout: magic "GGUF", u32 version (2 or 3, little-endian), u64 tensor count, u64 KV count, the KVs,
// the tensor infos, zero padding to the alignment, then the data. Every rejection ggml's gguf.cpp makes
// is a distinct `GGUFProblem`, so a hostile file fails with the same reason llama.cpp would give.
// Dims are stored ne0-first (the contiguous axis); `torchShape` reverses them.

/// Why a GGUF file was rejected.
public enum GGUFProblem: Error, Equatable, Sendable, CustomStringConvertible {
  case badMagic
  case byteSwapped
  case unsupportedVersion(UInt32)
  case countTooLarge(what: String, count: UInt64)
  case truncated(at: Int)
  case stringTooLong(UInt64)
  case emptyKey
  case duplicateKey(String)
  case invalidValueType(key: String, type: UInt32)
  case invalidBool(key: String, value: UInt8)
  case alignmentNotUInt32
  case invalidAlignment(UInt32)
  case tensorNameTooLong(String)
  case duplicateTensor(String)
  case tooManyDimensions(tensor: String, count: UInt32)
  case invalidDimension(tensor: String, value: Int64)
  case elementCountOverflow(tensor: String)
  case unknownType(tensor: String, id: UInt32)
  case rowNotWholeBlocks(tensor: String, ne0: Int, blockSize: Int)
  case offsetMismatch(tensor: String, offset: UInt64, expected: Int)
  case dataTruncated(tensor: String)

  public var description: String {
    switch self {
    case .badMagic: return "not a GGUF file (bad magic)"
    case .byteSwapped: return "endianness mismatch (a big-endian or byte-swapped file)"
    case .unsupportedVersion(let v): return v == 1 ? "GGUF version 1 is no longer supported" : "unsupported GGUF version \(v)"
    case .countTooLarge(let w, let n): return "\(w) count \(n) is larger than the file can hold"
    case .truncated(let at): return "file ends early (at byte \(at))"
    case .stringTooLong(let n): return "string length \(n) runs past the end of the file"
    case .emptyKey: return "empty metadata key"
    case .duplicateKey(let k): return "duplicate metadata key `\(k)`"
    case .invalidValueType(let k, let t): return "metadata key `\(k)` has invalid value type \(t)"
    case .invalidBool(let k, let v): return "metadata key `\(k)` has a bool of value \(v) (must be 0 or 1)"
    case .alignmentNotUInt32: return "general.alignment must be a UINT32"
    case .invalidAlignment(let a): return "alignment \(a) is not a power of two"
    case .tensorNameTooLong(let n): return "tensor name `\(n)` is 64 bytes or longer"
    case .duplicateTensor(let n): return "duplicate tensor `\(n)`"
    case .tooManyDimensions(let n, let c): return "tensor `\(n)` has \(c) dimensions (at most 4)"
    case .invalidDimension(let n, let v): return "tensor `\(n)` has dimension \(v)"
    case .elementCountOverflow(let n): return "tensor `\(n)` has too many elements"
    case .unknownType(let n, let id): return "tensor `\(n)` has unknown or removed ggml type \(id)"
    case .rowNotWholeBlocks(let n, let ne0, let b): return "tensor `\(n)`: ne0 = \(ne0) is not a multiple of the block size \(b)"
    case .offsetMismatch(let n, let o, let e): return "tensor `\(n)` has offset \(o), expected \(e)"
    case .dataTruncated(let n): return "tensor `\(n)` data runs past the end of the file"
    }
  }
}

/// A metadata value. Arrays keep their element type so empty arrays stay typed.
public indirect enum GGUFValue: Equatable, Sendable {
  case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
  case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
  case array(elementType: UInt32, [GGUFValue])

  /// The value as an integer (any integer type, or bool).
  public var intValue: Int? {
    switch self {
    case .uint8(let v): return Int(v)
    case .int8(let v): return Int(v)
    case .uint16(let v): return Int(v)
    case .int16(let v): return Int(v)
    case .uint32(let v): return Int(v)
    case .int32(let v): return Int(v)
    case .uint64(let v): return Int(exactly: v)
    case .int64(let v): return Int(v)
    case .bool(let v): return v ? 1 : 0
    default: return nil
    }
  }
  public var doubleValue: Double? {
    switch self {
    case .float32(let v): return Double(v)
    case .float64(let v): return v
    default: return intValue.map(Double.init)
    }
  }
  public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
  public var arrayValue: [GGUFValue]? { if case .array(_, let a) = self { return a } else { return nil } }
  public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
}

public struct GGUFTensorInfo: Equatable, Sendable {
  public var name: String
  /// Dimensions ne0 first (the contiguous axis), as stored.
  public var dims: [Int]
  public var type: GGMLType
  /// Offset from the start of the data section.
  public var offset: Int
  public var byteCount: Int
  /// Dimensions in numpy/torch order (reversed).
  public var torchShape: [Int] { dims.reversed() }
  public var elementCount: Int { dims.reduce(1, *) }
}

public final class GGUFFile: @unchecked Sendable {
  public static let defaultAlignment = 32
  public var path: String { mapped.path }
  public let version: UInt32
  /// Metadata keys in file order, and their values.
  public let keys: [String]
  public let metadata: [String: GGUFValue]
  public let tensors: [GGUFTensorInfo]
  public let alignment: Int
  public let dataStart: Int
  private let mapped: MappedFile
  private let byName: [String: Int]

  public init(path: String) throws(FormatError) {
    mapped = try MappedFile(path: path)
    let parsed: GGUFParser.Result
    do { parsed = try GGUFParser.parse(mapped.bytes) } catch { throw .gguf(file: path, problem: error) }
    version = parsed.version
    keys = parsed.keys
    metadata = parsed.metadata
    tensors = parsed.tensors
    alignment = parsed.alignment
    dataStart = parsed.dataStart
    byName = Dictionary(uniqueKeysWithValues: parsed.tensors.enumerated().map { ($1.name, $0) })
  }

  public func info(_ name: String) -> GGUFTensorInfo? { byName[name].map { tensors[$0] } }

  /// The raw bytes of a tensor (blocks for quantised types), zero-copy.
  public func rawBytes(_ info: GGUFTensorInfo) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(rebasing: mapped.bytes[fileRange(info)])
  }

  /// The tensor widened to f32 in torch order (a fresh owned tensor named `name`).
  public func dequantized(_ info: GGUFTensorInfo, as name: String? = nil) throws(FormatError) -> Tensor {
    let n = info.elementCount
    let storage = try OwnedBytes.allocate(n * 4, file: path, what: "tensor `\(info.name)` widened to f32")
    let out = storage.pointer.bindMemory(to: Float.self, capacity: max(n, 1))
    guard GGUFQuants.dequantize(info.type, from: rawBytes(info), to: out, count: n) else {
      throw .unsupportedGGMLType(file: path, tensor: info.name, type: info.type.name)
    }
    return try Tensor(info: TensorInfo(name: name ?? info.name, dtype: .f32, shape: info.torchShape), bytes: storage.bytes, owner: storage)
  }

  public func release(_ info: GGUFTensorInfo) { mapped.release(fileRange(info)) }

  private func fileRange(_ info: GGUFTensorInfo) -> Range<Int> {
    (dataStart + info.offset)..<(dataStart + info.offset + info.byteCount)
  }
}

/// The byte-level parser, separate from the mmap so that tests and the fuzzer can feed it buffers.
public enum GGUFParser {
  public struct Result {
    public var version: UInt32
    public var keys: [String]
    public var metadata: [String: GGUFValue]
    public var tensors: [GGUFTensorInfo]
    public var alignment: Int
    public var dataStart: Int
  }

  static let maxStringLength: UInt64 = 1 << 30
  static let maxArrayCount: UInt64 = 1 << 30

  public static func parse(_ bytes: UnsafeRawBufferPointer) throws(GGUFProblem) -> Result {
    var c = Cursor(bytes: bytes)
    guard bytes.count >= 4, try c.u32() == 0x4655_4747 else { throw .badMagic }
    let version = try c.u32()
    if version != 0 && version & 0xFFFF == 0 { throw .byteSwapped }
    guard version == 2 || version == 3 else { throw .unsupportedVersion(version) }
    let tensorCount = try c.u64()
    let kvCount = try c.u64()
    // Every tensor info takes at least 8+4+4+8 bytes and every KV at least 8+4 bytes.
    guard tensorCount <= UInt64(bytes.count / 24) else { throw .countTooLarge(what: "tensor", count: tensorCount) }
    guard kvCount <= UInt64(bytes.count / 12) else { throw .countTooLarge(what: "metadata", count: kvCount) }

    var keys: [String] = []
    var metadata: [String: GGUFValue] = [:]
    for _ in 0..<kvCount {
      let key = try c.string()
      guard !key.isEmpty else { throw .emptyKey }
      guard metadata[key] == nil else { throw .duplicateKey(key) }
      let type = try c.u32()
      metadata[key] = try c.value(type: type, key: key, depth: 0)
      keys.append(key)
    }
    var alignment = GGUFFile.defaultAlignment
    if let a = metadata["general.alignment"] {
      guard case .uint32(let value) = a else { throw .alignmentNotUInt32 }
      guard value != 0, value & (value - 1) == 0 else { throw .invalidAlignment(value) }
      alignment = Int(value)
    }

    var tensors: [GGUFTensorInfo] = []
    var seen = Set<String>()
    var expectedOffset = 0
    for _ in 0..<tensorCount {
      let name = try c.string()
      guard name.utf8.count < 64 else { throw .tensorNameTooLong(name) }
      guard seen.insert(name).inserted else { throw .duplicateTensor(name) }
      let nDims = try c.u32()
      guard nDims <= 4 else { throw .tooManyDimensions(tensor: name, count: nDims) }
      var dims: [Int] = []
      // The product of the dims with zeros counted as ones must fit: a zero dim makes the tensor empty,
      // but code that multiplies the torch shape in another order would still overflow on the others.
      var extent: Int64 = 1
      for _ in 0..<nDims {
        let d = Int64(bitPattern: try c.u64())
        guard d >= 0 else { throw .invalidDimension(tensor: name, value: d) }
        let (p, o) = extent.multipliedReportingOverflow(by: Swift.max(d, 1))
        guard !o, p < Int64.max else { throw .elementCountOverflow(tensor: name) }
        extent = p
        dims.append(Int(d))
      }
      let typeID = try c.u32()
      guard let type = GGMLType(id: typeID) else { throw .unknownType(tensor: name, id: typeID) }
      let ne0 = dims.first ?? 1
      guard ne0 % type.blockSize == 0 else { throw .rowNotWholeBlocks(tensor: name, ne0: ne0, blockSize: type.blockSize) }
      guard let rowBytes = type.rowBytes(ne0) else { throw .elementCountOverflow(tensor: name) }
      var byteCount = rowBytes
      for d in dims.dropFirst() {
        let (p, o) = byteCount.multipliedReportingOverflow(by: d)
        guard !o else { throw .elementCountOverflow(tensor: name) }
        byteCount = p
      }
      let offset = try c.u64()
      guard offset == UInt64(expectedOffset) else { throw .offsetMismatch(tensor: name, offset: offset, expected: expectedOffset) }
      tensors.append(GGUFTensorInfo(name: name, dims: dims, type: type, offset: expectedOffset, byteCount: byteCount))
      guard let size = padded(byteCount, alignment), case (let next, false) = expectedOffset.addingReportingOverflow(size) else {
        throw .elementCountOverflow(tensor: name)
      }
      expectedOffset = next
    }
    guard let dataStart = padded(c.position, alignment) else { throw .truncated(at: c.position) }
    for t in tensors {
      guard dataStart <= bytes.count, t.byteCount <= bytes.count - dataStart, t.offset <= bytes.count - dataStart - t.byteCount else {
        throw .dataTruncated(tensor: t.name)
      }
    }
    return Result(version: version, keys: keys, metadata: metadata, tensors: tensors, alignment: alignment, dataStart: dataStart)
  }

  /// `x` rounded up to a multiple of `alignment`, or nil on overflow.
  static func padded(_ x: Int, _ alignment: Int) -> Int? {
    let (p, o) = x.addingReportingOverflow((alignment - x % alignment) % alignment)
    return o ? nil : p
  }

  struct Cursor {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    mutating func take(_ n: Int) throws(GGUFProblem) -> Int {
      guard n >= 0, n <= bytes.count - position else { throw .truncated(at: position) }
      defer { position += n }
      return position
    }
    mutating func load<T: FixedWidthInteger>(_: T.Type) throws(GGUFProblem) -> T {
      T(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(MemoryLayout<T>.size), as: T.self))
    }
    mutating func u32() throws(GGUFProblem) -> UInt32 { try load(UInt32.self) }
    mutating func u64() throws(GGUFProblem) -> UInt64 { try load(UInt64.self) }

    mutating func string() throws(GGUFProblem) -> String {
      let length = try u64()
      guard length <= maxStringLength, length <= UInt64(bytes.count - position) else { throw .stringTooLong(length) }
      let start = try take(Int(length))
      return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + Int(length))]), as: UTF8.self)
    }

    mutating func value(type: UInt32, key: String, depth: Int) throws(GGUFProblem) -> GGUFValue {
      switch type {
      case 0: return .uint8(try load(UInt8.self))
      case 1: return .int8(try load(Int8.self))
      case 2: return .uint16(try load(UInt16.self))
      case 3: return .int16(try load(Int16.self))
      case 4: return .uint32(try load(UInt32.self))
      case 5: return .int32(try load(Int32.self))
      case 6: return .float32(Float(bitPattern: try load(UInt32.self)))
      case 7:
        let b = try load(UInt8.self)
        guard b <= 1 else { throw .invalidBool(key: key, value: b) }
        return .bool(b == 1)
      case 8: return .string(try string())
      case 9:
        guard depth < 8 else { throw .invalidValueType(key: key, type: type) }
        let elementType = try u32()
        guard elementType <= 12 else { throw .invalidValueType(key: key, type: elementType) }
        let count = try u64()
        // Each element takes at least its smallest encoding, so a count beyond what the bytes left can
        // hold is a lie (and an allocation the file does not pay for).
        guard count <= maxArrayCount, count <= UInt64((bytes.count - position) / Self.smallestEncoding(elementType)) else {
          throw .countTooLarge(what: "array `\(key)`", count: count)
        }
        var items: [GGUFValue] = []
        items.reserveCapacity(Int(count))
        for _ in 0..<count { items.append(try value(type: elementType, key: key, depth: depth + 1)) }
        return .array(elementType: elementType, items)
      case 10: return .uint64(try load(UInt64.self))
      case 11: return .int64(try load(Int64.self))
      case 12: return .float64(Double(bitPattern: try load(UInt64.self)))
      default: throw .invalidValueType(key: key, type: type)
      }
    }

    /// Bytes the smallest value of a metadata type takes (a string: its u64 length; an array: its type and count).
    static func smallestEncoding(_ type: UInt32) -> Int {
      switch type {
      case 0, 1, 7: return 1
      case 2, 3: return 2
      case 4, 5, 6: return 4
      case 8, 10, 11, 12: return 8
      default: return 12
      }
    }
  }
}
