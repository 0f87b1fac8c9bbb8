// safetensors: a strict reader over mmap (formats.md §1.1-1.3).
//
// Layout: u64 LE header length N, N bytes of UTF-8 JSON, then the data buffer; `data_offsets` are
// relative to the buffer (file offset 8+N). Validation follows the reference reader's order so that
// each hostile input fails with the same error the Rust crate gives; on top of it we reject duplicate
// keys and unknown entry fields (the schema says additionalProperties: false).

/// Where a tensor's bytes are, relative to the start of the data buffer.
public struct SafetensorsEntry: Equatable, Sendable {
  public var info: TensorInfo
  public var dataRange: Range<Int>
}

public struct SafetensorsHeader: Equatable, Sendable {
  /// Entries in data order (sorted by offsets).
  public var entries: [SafetensorsEntry]
  /// The `__metadata__` map, if the file has one.
  public var metadata: [String: String]?
  /// N, the JSON header's length in bytes (padding included).
  public var headerLength: Int
  /// File offset of the data buffer (8 + N).
  public var dataStart: Int { 8 + headerLength }
}

public enum Safetensors {
  /// The reference limit on N, on read and on write.
  public static let maxHeaderLength = 100_000_000

  /// Parses and validates the header of a complete file image. `fileBytes` must be the whole file:
  /// the last check is that the data buffer ends exactly at the end of the file.
  public static func parseHeader(_ fileBytes: UnsafeRawBufferPointer, file: String) throws(FormatError) -> SafetensorsHeader {
    let length = fileBytes.count
    guard length >= 8 else { throw .headerTooSmall(file: file) }
    let n64 = fileBytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
    guard n64 <= UInt64(maxHeaderLength) else { throw .headerTooLarge(file: file) }
    let n = Int(n64)
    guard 8 + n <= length else { throw .invalidHeaderLength(file: file) }
    let headerBytes = UnsafeRawBufferPointer(rebasing: fileBytes[8..<(8 + n)])
    guard String(validating: headerBytes, as: UTF8.self) != nil else { throw .invalidHeader(file: file) }

    let object: JSONObject
    do {
      guard let parsed = try JSONParser.parse(headerBytes).objectValue else {
        throw FormatError.invalidHeaderDeserialization(file: file, reason: "the header is not a JSON object")
      }
      object = parsed
    } catch let error as JSONParseError {
      if case .duplicateKey(let key) = error { throw .duplicateKey(file: file, key: key) }
      throw .invalidHeaderDeserialization(file: file, reason: error.description)
    } catch let error as FormatError {
      throw error
    } catch {
      throw .invalidHeaderDeserialization(file: file, reason: "\(error)")
    }

    var metadata: [String: String]?
    var raw: [(name: String, dtype: DType, shape: [UInt64], begin: UInt64, end: UInt64)] = []
    for key in object.keys {
      let value = object[key]!
      if key == "__metadata__" {
        metadata = try decodeMetadata(value, file: file)
      } else {
        let (dtype, shape, begin, end) = try decodeEntry(value, name: key, file: file)
        raw.append((key, dtype, shape, begin, end))
      }
    }

    raw.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
    var start: UInt64 = 0
    for r in raw {
      guard r.begin == start, r.end >= r.begin else { throw .invalidOffset(file: file, tensor: r.name) }
      var elements: UInt64 = 1
      for d in r.shape {
        let (p, o) = elements.multipliedReportingOverflow(by: d)
        // A dimension beyond Int.max cannot be indexed here even when another dimension is 0.
        guard !o, d <= UInt64(Int.max) else { throw .validationOverflow(file: file, tensor: r.name) }
        elements = p
      }
      let (bitCount, o) = elements.multipliedReportingOverflow(by: UInt64(r.dtype.bits))
      guard !o else { throw .validationOverflow(file: file, tensor: r.name) }
      guard bitCount % 8 == 0 else { throw .misalignedSlice(file: file, tensor: r.name) }
      guard r.end - r.begin == bitCount / 8 else { throw .tensorInvalidInfo(file: file, tensor: r.name) }
      start = r.end
    }
    let (covered, o) = start.addingReportingOverflow(8 + UInt64(n))
    guard !o, covered == UInt64(length) else { throw .metadataIncompleteBuffer(file: file) }
    // Every offset is now bounded by the file length, so the Int conversions cannot trap.
    let entries = raw.map {
      SafetensorsEntry(
        info: TensorInfo(name: $0.name, dtype: $0.dtype, shape: $0.shape.map { Int($0) }),
        dataRange: Int($0.begin)..<Int($0.end))
    }
    return SafetensorsHeader(entries: entries, metadata: metadata, headerLength: n)
  }

  private static func decodeMetadata(_ value: JSONValue, file: String) throws(FormatError) -> [String: String] {
    guard let object = value.objectValue else {
      throw .invalidHeaderDeserialization(file: file, reason: "__metadata__ must be an object of strings")
    }
    var out: [String: String] = [:]
    for key in object.keys {
      guard let s = object[key]!.stringValue else {
        throw .invalidHeaderDeserialization(file: file, reason: "__metadata__ value for `\(key)` is not a string")
      }
      out[key] = s
    }
    return out
  }

  private static func decodeEntry(
    _ value: JSONValue, name: String, file: String
  ) throws(FormatError) -> (DType, [UInt64], UInt64, UInt64) {
    func fail(_ why: String) -> FormatError { .invalidHeaderDeserialization(file: file, reason: "tensor `\(name)`: \(why)") }
    guard let object = value.objectValue else { throw fail("entry is not an object") }
    for key in object.keys where !["dtype", "shape", "data_offsets"].contains(key) {
      throw fail("unknown field `\(key)`")
    }
    guard let dtypeName = object["dtype"] else { throw fail("missing field `dtype`") }
    guard let dtypeText = dtypeName.stringValue, let dtype = DType(safetensorsName: dtypeText) else {
      throw fail("unknown dtype \(dtypeName)")
    }
    guard let shapeValue = object["shape"] else { throw fail("missing field `shape`") }
    guard let shapeArray = shapeValue.arrayValue else { throw fail("shape is not an array") }
    var shape: [UInt64] = []
    for d in shapeArray {
      guard let v = d.uint64Value else { throw fail("shape has a value that is not an unsigned integer") }
      shape.append(v)
    }
    guard let offsetsValue = object["data_offsets"] else { throw fail("missing field `data_offsets`") }
    guard let offsets = offsetsValue.arrayValue, offsets.count == 2,
      let begin = offsets[0].uint64Value, let end = offsets[1].uint64Value
    else { throw fail("data_offsets must be two unsigned integers") }
    return (dtype, shape, begin, end)
  }
}

/// An opened safetensors file: validated header over a read-only map.
public final class SafetensorsFile: @unchecked Sendable {
  public let header: SafetensorsHeader
  private let mapped: MappedFile
  private let byName: [String: Int]
  public var path: String { mapped.path }

  public init(path: String) throws(FormatError) {
    mapped = try MappedFile(path: path)
    header = try Safetensors.parseHeader(mapped.bytes, file: path)
    var index: [String: Int] = [:]
    for (i, e) in header.entries.enumerated() { index[e.info.name] = i }
    byName = index
  }

  public var entries: [SafetensorsEntry] { header.entries }
  public var metadata: [String: String]? { header.metadata }
  public var fileSize: Int { mapped.count }
  public func contains(_ name: String) -> Bool { byName[name] != nil }
  public func entry(_ name: String) -> SafetensorsEntry? { byName[name].map { header.entries[$0] } }

  /// A zero-copy view of the named tensor; valid as long as the file object is kept (the tensor keeps it).
  public func tensor(_ name: String) throws(FormatError) -> Tensor {
    guard let entry = entry(name) else { throw .tensorNotFound(file: path, tensor: name) }
    return try tensor(entry)
  }

  public func tensor(_ entry: SafetensorsEntry) throws(FormatError) -> Tensor {
    let range = fileRange(entry)
    return try Tensor(info: entry.info, bytes: UnsafeRawBufferPointer(rebasing: mapped.bytes[range]), owner: mapped)
  }

  /// Drops the resident pages of a tensor once a streaming tool is done with it.
  public func release(_ entry: SafetensorsEntry) { mapped.release(fileRange(entry)) }
  /// Drops the pages of `bytes` (relative to the tensor's data, clamped to it).
  public func release(_ entry: SafetensorsEntry, bytes: Range<Int>) {
    let range = fileRange(entry)
    let lower = range.lowerBound + min(max(0, bytes.lowerBound), range.count)
    let upper = range.lowerBound + min(max(0, bytes.upperBound), range.count)
    mapped.release(lower..<max(lower, upper))
  }

  /// Hints sequential reading of a tensor's bytes.
  public func adviseSequential(_ entry: SafetensorsEntry) { mapped.adviseSequential(fileRange(entry)) }

  private func fileRange(_ entry: SafetensorsEntry) -> Range<Int> {
    (header.dataStart + entry.dataRange.lowerBound)..<(header.dataStart + entry.dataRange.upperBound)
  }
}
