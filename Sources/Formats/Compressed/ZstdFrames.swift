// zstd frames for compressed checkpoints: a byte run is cut into chunks of whole elements, each chunk is
// byte-shuffled (all first bytes of its elements, then all second bytes, ...: a float's sign/exponent
// byte is far more predictable than its low mantissa byte, and zstd's literal coder sees that only when
// like bytes sit together) and becomes one zstd frame with its content checksum (the low 32 bits of
// XXH64). Independent frames let compression and decompression run on every core.

import CZstd
import Dispatch

#if canImport(Glibc)
  import Glibc
#endif

public enum ZstdFrames {
  /// The zstd levels libzstd accepts (negative levels are its "fast" modes).
  public static var levels: ClosedRange<Int> { Int(ZSTD_minCLevel())...Int(ZSTD_maxCLevel()) }

  /// Frames as they will be stored: the bytes, and the size of each frame.
  public struct Compressed {
    public let storage: OwnedBytes
    public let frames: [Int]
    public var bytes: UnsafeRawBufferPointer { storage.bytes }
    /// A U8 tensor over the frames (no copy).
    public func tensor(_ name: String) throws(FormatError) -> Tensor {
      try Tensor(info: TensorInfo(name: name, dtype: .u8, shape: [storage.count]), bytes: storage.bytes, owner: storage)
    }
  }

  /// Compresses `count` elements of `elementSize` bytes in chunks of `chunkElements`. Returns the
  /// concatenated frames and the byte size of each.
  public static func compress(
    _ source: UnsafeRawBufferPointer, elementSize: Int, chunkElements: Int, level: Int
  ) throws(FormatError) -> Compressed {
    let chunkBytes = chunkElements * elementSize
    let chunks = source.isEmpty ? 0 : (source.count + chunkBytes - 1) / chunkBytes
    let bound = ZSTD_compressBound(chunkBytes)
    let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, chunks * bound), alignment: 64)
    defer { staging.deallocate() }
    final class Sizes: @unchecked Sendable { var values: [Int]; init(_ n: Int) { values = Array(repeating: 0, count: n) } }
    let sizes = Sizes(chunks)
    let workers = min(chunks, Parallel.workers)
    let (base, sourceCount) = (source.baseAddress, source.count)
    nonisolated(unsafe) let out = staging.baseAddress!
    nonisolated(unsafe) let input = base
    sizes.values.withUnsafeMutableBufferPointer { sizePointer in
      nonisolated(unsafe) let sizeOut = sizePointer.baseAddress!
      DispatchQueue.concurrentPerform(iterations: workers) { w in
        let context = ZSTD_createCCtx()!
        defer { ZSTD_freeCCtx(context) }
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Int32(level))
        ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: chunkBytes, alignment: 64)
        defer { scratch.deallocate() }
        var c = w
        while c < chunks {
          let start = c * chunkBytes
          let length = min(chunkBytes, sourceCount - start)
          let plain = shuffle(input! + start, count: length / elementSize, elementSize: elementSize, scratch: scratch)
          let written = ZSTD_compress2(context, out + c * bound, bound, plain, length)
          // The destination holds compressBound bytes, so only a failed allocation can fail it: -1 marks it.
          sizeOut[c] = ZSTD_isError(written) != 0 ? -1 : written
          c += workers
        }
      }
    }
    if sizes.values.contains(-1) { throw .io(file: "zstd", reason: "compression failed (out of memory?)") }
    let storage = OwnedBytes(count: sizes.values.reduce(0, +))
    var offset = 0
    for c in 0..<chunks {
      (storage.pointer + offset).copyMemory(from: out + c * bound, byteCount: sizes.values[c])
      offset += sizes.values[c]
    }
    return Compressed(storage: storage, frames: sizes.values)
  }

  /// Decompresses frames written by `compress` into `destination`, whose size is the plain size.
  /// Returns nil, or why it failed (a corrupt frame, a checksum mismatch, a wrong size).
  /// The frames' start offsets in the stored bytes (and their end), or why they cannot hold `plainBytes`:
  /// one frame per chunk, each non-empty, adding up to exactly the stored bytes. Checked before the plain
  /// buffer is allocated, so a file cannot ask for memory its frames do not describe.
  public static func layout(frames: [Int], storedBytes: Int, plainBytes: Int, elementSize: Int, chunkElements: Int) -> Result<[Int], FrameLayoutError> {
    let chunkBytes = chunkElements * elementSize
    let expectedChunks = plainBytes == 0 ? 0 : (plainBytes + chunkBytes - 1) / chunkBytes
    guard frames.count == expectedChunks else {
      return .failure(.init(reason: "\(frames.count) zstd frames where \(expectedChunks) are needed for \(plainBytes) bytes"))
    }
    var offsets = [0]
    for size in frames {
      let (end, overflow) = offsets.last!.addingReportingOverflow(size)
      guard size > 0, !overflow, end <= storedBytes else { return .failure(.init(reason: "zstd frame sizes do not fit the \(storedBytes) stored bytes")) }
      offsets.append(end)
    }
    guard offsets.last! == storedBytes else {
      return .failure(.init(reason: "the zstd frames add up to \(offsets.last!) bytes but \(storedBytes) are stored"))
    }
    return .success(offsets)
  }

  public struct FrameLayoutError: Error { public var reason: String }

  public static func decompress(
    _ source: UnsafeRawBufferPointer, frames: [Int], elementSize: Int, chunkElements: Int,
    into destination: UnsafeMutableRawBufferPointer
  ) -> String? {
    let chunkBytes = chunkElements * elementSize
    let expectedChunks = destination.isEmpty ? 0 : (destination.count + chunkBytes - 1) / chunkBytes
    let offsets: [Int]
    switch layout(frames: frames, storedBytes: source.count, plainBytes: destination.count, elementSize: elementSize, chunkElements: chunkElements) {
    case .success(let o): offsets = o
    case .failure(let e): return e.reason
    }
    final class Failures: @unchecked Sendable { var first: [String?]; init(_ n: Int) { first = Array(repeating: nil, count: n) } }
    let workers = min(expectedChunks, Parallel.workers)
    let starts = offsets
    let failures = Failures(workers)
    nonisolated(unsafe) let input = source.baseAddress
    nonisolated(unsafe) let output = destination.baseAddress
    let total = destination.count
    DispatchQueue.concurrentPerform(iterations: workers) { w in
      let context = ZSTD_createDCtx()!
      defer { ZSTD_freeDCtx(context) }
      let scratch = UnsafeMutableRawPointer.allocate(byteCount: chunkBytes, alignment: 64)
      defer { scratch.deallocate() }
      var c = w
      while c < expectedChunks {
        let length = min(chunkBytes, total - c * chunkBytes)
        let target = elementSize == 1 ? output! + c * chunkBytes : scratch
        let n = ZSTD_decompressDCtx(context, target, length, input! + starts[c], frames[c])
        if ZSTD_isError(n) != 0 {
          failures.first[w] = "zstd frame \(c): \(String(cString: ZSTD_getErrorName(n)))"
          return
        }
        guard n == length else {
          failures.first[w] = "zstd frame \(c) holds \(n) bytes, \(length) expected"
          return
        }
        if elementSize > 1 { unshuffle(scratch, count: length / elementSize, elementSize: elementSize, into: output! + c * chunkBytes) }
        c += workers
      }
    }
    return failures.first.compactMap { $0 }.first
  }

  /// Element bytes grouped by position (byte 0 of every element, then byte 1, ...); returns `source`
  /// itself for single bytes.
  static func shuffle(_ source: UnsafeRawPointer, count: Int, elementSize: Int, scratch: UnsafeMutableRawPointer) -> UnsafeRawPointer {
    if elementSize == 1 { return source }
    let s = source.assumingMemoryBound(to: UInt8.self), d = scratch.assumingMemoryBound(to: UInt8.self)
    if elementSize == 2 {
      for j in 0..<count {
        d[j] = s[2 &* j]
        d[count &+ j] = s[2 &* j &+ 1]
      }
    } else {
      for j in 0..<count { for b in 0..<elementSize { d[b &* count &+ j] = s[j &* elementSize &+ b] } }
    }
    return UnsafeRawPointer(scratch)
  }

  static func unshuffle(_ source: UnsafeRawPointer, count: Int, elementSize: Int, into destination: UnsafeMutableRawPointer) {
    let s = source.assumingMemoryBound(to: UInt8.self), d = destination.assumingMemoryBound(to: UInt8.self)
    if elementSize == 2 {
      for j in 0..<count {
        d[2 &* j] = s[j]
        d[2 &* j &+ 1] = s[count &+ j]
      }
    } else {
      for j in 0..<count { for b in 0..<elementSize { d[j &* elementSize &+ b] = s[b &* count &+ j] } }
    }
  }
}

/// How many threads a parallel loop in Formats uses (the cores this process may run on).
public enum Parallel {
  public static var workers: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}
