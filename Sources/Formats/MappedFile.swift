// Read-only memory maps of checkpoint files, and the page release that keeps tools that stream over
// large checkpoints at O(largest tensor) resident memory.

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
