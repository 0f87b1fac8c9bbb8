// A named, shaped, typed view over bytes: either a slice of a memory-mapped file or bytes it owns.
// No math beyond dtype conversion lives here (that is Surgery's job).

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// What a header says about a tensor, before any data is touched.
public struct TensorInfo: Equatable, Sendable {
  public var name: String
  public var dtype: DType
  public var shape: [Int]

  public init(name: String, dtype: DType, shape: [Int]) {
    self.name = name
    self.dtype = dtype
    self.shape = shape
  }

  /// Product of the dimensions (1 for a scalar), or nil on overflow.
  public var elementCount: Int? {
    var n = 1
    for d in shape {
      let (p, o) = n.multipliedReportingOverflow(by: d)
      if o || d < 0 { return nil }
      n = p
    }
    return n
  }

  /// Bytes of data, or nil on overflow or a partial byte.
  public var byteCount: Int? { elementCount.flatMap { dtype.byteCount(elements: $0) } }
}

/// Keeps bytes alive for the tensors that view them.
public final class OwnedBytes: @unchecked Sendable {
  public let pointer: UnsafeMutableRawPointer
  public let count: Int
  public init(count: Int) {
    self.count = count
    pointer = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(count, 1), alignment: 64)
    ownsAlignedAllocation = false
  }
  /// nil when the allocator refuses (posix_memalign; see OwnedBytes.allocate).
  init?(failable count: Int) {
    var raw: UnsafeMutableRawPointer?
    guard count >= 0, posix_memalign(&raw, 64, Swift.max(count, 1)) == 0, let raw else { return nil }
    self.count = count
    pointer = raw
    ownsAlignedAllocation = true
  }
  private let ownsAlignedAllocation: Bool
  deinit { if ownsAlignedAllocation { free(pointer) } else { pointer.deallocate() } }
  public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: count) }
  public var mutableBytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: pointer, count: count) }
}

public struct Tensor: @unchecked Sendable {
  public let info: TensorInfo
  /// The raw little-endian, row-major bytes; reached only through `withUnsafeBytes`, which keeps the
  /// owner alive for the duration (a bare pointer could outlive the buffer it points into).
  private let storage: UnsafeRawBufferPointer
  /// The mapped file or owned buffer `storage` points into.
  private let owner: AnyObject?

  public var name: String { info.name }
  public var dtype: DType { info.dtype }
  public var shape: [Int] { info.shape }
  public var elementCount: Int { info.elementCount ?? 0 }
  public var byteCount: Int { storage.count }

  /// Runs `body` over the tensor's bytes while the memory that holds them is guaranteed alive.
  public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
    defer { withExtendedLifetime(owner) {} }
    return try body(storage)
  }

  /// A copy of the bytes (for tests and small tensors).
  public var byteArray: [UInt8] { withUnsafeBytes { Array($0) } }

  /// A view over bytes kept alive by `owner`; the byte count must match dtype and shape exactly.
  public init(info: TensorInfo, bytes: UnsafeRawBufferPointer, owner: AnyObject?) throws(FormatError) {
    guard let expected = info.byteCount, expected == bytes.count else {
      throw .invalidTensorView(dtype: info.dtype, shape: info.shape, byteCount: bytes.count)
    }
    self.init(validated: info, bytes: bytes, owner: owner)
  }

  private init(validated info: TensorInfo, bytes: UnsafeRawBufferPointer, owner: AnyObject?) {
    self.info = info
    self.storage = bytes
    self.owner = owner
  }

  /// A tensor that owns a copy of `data`.
  public init(name: String, dtype: DType, shape: [Int], data: [UInt8]) throws(FormatError) {
    let storage = OwnedBytes(count: data.count)
    data.withUnsafeBytes { storage.mutableBytes.copyMemory(from: $0) }
    try self.init(info: TensorInfo(name: name, dtype: dtype, shape: shape), bytes: storage.bytes, owner: storage)
  }

  /// An f32 tensor that owns `values`, narrowed to `dtype` (F32 by default).
  public init(name: String, shape: [Int], float32 values: [Float], as dtype: DType = .f32) throws(FormatError) {
    try self = values.withUnsafeBufferPointer { (v) throws(FormatError) in try Tensor(name: name, shape: shape, float32: v, as: dtype) }
  }

  /// A tensor that owns a copy of `values` (f32, e.g. a block of a model's weights), narrowed to `dtype`.
  public init(name: String, shape: [Int], float32 values: UnsafeBufferPointer<Float>, as dtype: DType = .f32) throws(FormatError) {
    let info = TensorInfo(name: name, dtype: dtype, shape: shape)
    guard info.elementCount == values.count, let byteCount = info.byteCount else {
      throw .invalidTensorView(dtype: dtype, shape: shape, byteCount: values.count * dtype.bits / 8)
    }
    let storage = OwnedBytes(count: byteCount)
    if let base = values.baseAddress { try Float32Conversion.narrow(dtype, from: base, to: storage.pointer, count: values.count) }
    try self.init(info: info, bytes: storage.bytes, owner: storage)
  }

  /// The values widened to f32.
  public func float32() throws(FormatError) -> [Float] {
    let n = elementCount
    guard dtype.convertsToFloat32 else { throw .unsupportedConversion(from: dtype, to: .f32) }
    if n == 0 { return [] }
    let source = storage.baseAddress!
    let dtype = dtype
    defer { withExtendedLifetime(owner) {} }
    do {
      return try [Float](unsafeUninitializedCapacity: n) { out, initialized in
        try Float32Conversion.widen(dtype, from: source, to: out.baseAddress!, count: n)
        initialized = n
      }
    } catch let error as FormatError { throw error } catch { throw .io(file: name, reason: "\(error)") }
  }

  /// A copy stored as `target`, converting through f32 in L1-sized chunks (no full-size f32 copy).
  public func converted(to target: DType) throws(FormatError) -> Tensor {
    let info = TensorInfo(name: name, dtype: target, shape: shape)
    guard let byteCount = info.byteCount else { throw .validationOverflow(file: name, tensor: name) }
    let output = OwnedBytes(count: byteCount)
    try withUnsafeBytes { (bytes) throws(FormatError) in
      try convert(bytes, into: output, as: target)
    }
    return try Tensor(info: info, bytes: output.bytes, owner: output)
  }

  private func convert(_ bytes: UnsafeRawBufferPointer, into storage: OwnedBytes, as target: DType) throws(FormatError) {
    if target == dtype {
      if bytes.count > 0 { storage.mutableBytes.copyMemory(from: bytes) }
    } else if target == .f32 {
      guard dtype.convertsToFloat32 else { throw .unsupportedConversion(from: dtype, to: target) }
      let out = storage.pointer.bindMemory(to: Float.self, capacity: max(1, elementCount))
      if elementCount > 0 { try Float32Conversion.widen(dtype, from: bytes.baseAddress!, to: out, count: elementCount) }
    } else if elementCount > 0 {
      guard dtype.convertsToFloat32 else { throw .unsupportedConversion(from: dtype, to: target) }
      var done = 0
      let outBytesPerElement = target.bits / 8
      try Float32Conversion.widenStreaming(dtype, from: bytes.baseAddress!, count: elementCount) { (chunk) throws(FormatError) in
        try Float32Conversion.narrow(target, from: chunk.baseAddress!, to: storage.pointer + done * outBytesPerElement, count: chunk.count)
        done += chunk.count
      }
    }
  }

  /// The same bytes under another name (for renaming on write).
  public func renamed(_ newName: String) -> Tensor {
    var newInfo = info
    newInfo.name = newName
    return Tensor(validated: newInfo, bytes: storage, owner: owner)
  }
}
