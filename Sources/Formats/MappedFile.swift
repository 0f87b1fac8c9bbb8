// Read-only memory maps of checkpoint files, the page release that keeps tools that stream over
// large checkpoints at O(largest tensor) resident memory, and scratch memory that can spill to a file.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

public final class MappedFile: @unchecked Sendable {
  public let path: String
  public let count: Int
  private let base: UnsafeMutableRawPointer?

  /// Maps the whole file read-only. An empty file maps to an empty buffer.
  public init(path: String) throws(FormatError) {
    self.path = path
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .io(file: path, reason: "cannot open: \(systemErrorText())") }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw .io(file: path, reason: "cannot stat: \(systemErrorText())") }
    guard (info.st_mode & S_IFMT) == S_IFREG else { throw .io(file: path, reason: "not a regular file") }
    count = Int(info.st_size)
    if count == 0 {
      base = nil
      return
    }
    let mapped = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0)
    guard let mapped, mapped != MAP_FAILED else {
      throw .io(file: path, reason: "cannot map: \(systemErrorText())")
    }
    base = mapped
  }

  deinit { if let base { munmap(base, count) } }

  /// The file's bytes. Valid while this object is alive (ARC may end a local's life after its last use:
  /// prefer `withBytes`).
  public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

  /// Runs `body` over the bytes while the mapping is guaranteed alive.
  public func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
    defer { withExtendedLifetime(self) {} }
    return try body(bytes)
  }

  /// Tells the kernel the range will be read front to back (larger read-ahead).
  public func adviseSequential(_ range: Range<Int>) { advise(range, MADV_SEQUENTIAL) }

  /// Drops the resident pages of `range` from this process. The data stays readable: touching it
  /// again faults the pages back in from the page cache.
  public func release(_ range: Range<Int>) { advise(range, MADV_DONTNEED) }

  private func advise(_ range: Range<Int>, _ advice: Int32) {
    guard let base, !range.isEmpty else { return }
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = range.lowerBound / page * page
    let end = min(count, range.upperBound)
    guard end > start else { return }
    _ = madvise(base + start, end - start, advice)
  }
}

/// The text of the C library's last error (errno), for I/O error messages.
func systemErrorText() -> String { String(cString: strerror(errno)) }

/// A zero-filled working buffer of `count` floats: anonymous memory when it fits in `maxMemory` bytes,
/// else a temporary file in `directory` mapped shared and unlinked at once, so the kernel can page it
/// out and nothing is left behind, whatever happens to the process.
public final class ScratchFloats {
  public let base: UnsafeMutablePointer<Float>
  public let count: Int
  /// Whether the buffer lives in a temporary file.
  public let spilled: Bool
  private let mappedBytes: Int

  public init(count: Int, maxMemory: Int, directory: String) throws(FormatError) {
    self.count = count
    let (bytes, overflow) = max(1, count).multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
    guard !overflow else { throw .io(file: directory, reason: "a scratch buffer of \(count) floats overflows the address space") }
    guard bytes > maxMemory else {
      base = .allocate(capacity: max(1, count))
      base.initialize(repeating: 0, count: max(1, count))
      spilled = false
      mappedBytes = 0
      return
    }
    var template = Array((directory + "/espalier-scratch-XXXXXX").utf8CString)
    let fd = mkstemp(&template)
    guard fd >= 0 else { throw .io(file: directory, reason: "cannot create a temporary file: \(systemErrorText())") }
    defer { close(fd) }
    _ = template.withUnsafeBufferPointer { unlink($0.baseAddress!) }
    guard ftruncate(fd, off_t(bytes)) == 0,
      let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), mapped != MAP_FAILED
    else { throw .io(file: directory, reason: "cannot map \(bytes) bytes of scratch space: \(systemErrorText())") }
    base = mapped.bindMemory(to: Float.self, capacity: count)
    spilled = true
    mappedBytes = bytes
  }

  deinit {
    if spilled { munmap(base, mappedBytes) } else { base.deallocate() }
  }
}
