// Output files appear whole or not at all: bytes go to a temporary name in the same directory and are
// renamed over the destination only after the last write succeeded (rename is atomic within a
// filesystem). A failure removes the temporary file, so no partial output is ever left behind.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

public final class AtomicFile {
  public let path: String
  public let temporaryPath: String
  private var fd: Int32
  private var finished = false
  /// Bytes written so far.
  public private(set) var offset = 0

  public init(path: String) throws(FormatError) {
    self.path = path
    let slash = path.lastIndex(of: "/")
    let directory = slash.map { String(path[...$0]) } ?? ""
    let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
    temporaryPath = "\(directory).\(name).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
    fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw .io(file: path, reason: "cannot create: \(systemErrorText())") }
  }

  deinit { if !finished { discard() } }

  public func write(_ bytes: UnsafeRawBufferPointer) throws(FormatError) {
    try writeAll(bytes) { p, n, _ in Glibc.write(fd, p, n) }
    offset += bytes.count
  }

  /// Writes `bytes` at `position` without moving the append offset (for writers that lay a file out
  /// first and fill it in any order).
  public func write(_ bytes: UnsafeRawBufferPointer, at position: Int) throws(FormatError) {
    try writeAll(bytes) { p, n, done in pwrite(fd, p, n, off_t(position + done)) }
  }

  /// Calls `call(pointer, remaining, done)` until every byte is written, retrying on EINTR; a failure
  /// discards the file.
  private func writeAll(_ bytes: UnsafeRawBufferPointer, _ call: (UnsafeRawPointer, Int, Int) -> Int) throws(FormatError) {
    var done = 0
    while done < bytes.count {
      let n = call(bytes.baseAddress! + done, bytes.count - done, done)
      if n < 0 {
        if errno == EINTR { continue }
        let reason = systemErrorText()
        discard()
        throw .io(file: path, reason: "write failed: \(reason)")
      }
      done += n
    }
  }

  /// Sets the file's length (sparse until written), so that placed writes can land anywhere in it.
  public func resize(to length: Int) throws(FormatError) {
    guard ftruncate(fd, off_t(length)) == 0 else {
      let reason = systemErrorText()
      discard()
      throw .io(file: path, reason: "cannot size the file to \(length) bytes: \(reason)")
    }
  }

  public func write(_ bytes: [UInt8]) throws(FormatError) {
    let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
    defer { copy.deallocate() }
    copy.copyBytes(from: bytes)
    try write(UnsafeRawBufferPointer(copy))
  }

  /// Flushes and renames the temporary file over `path`.
  public func commit() throws(FormatError) {
    guard !finished else { return }
    if close(fd) != 0 {
      let reason = systemErrorText()
      fd = -1
      discard()
      throw .io(file: path, reason: "close failed: \(reason)")
    }
    fd = -1
    guard rename(temporaryPath, path) == 0 else {
      let reason = systemErrorText()
      discard()
      throw .io(file: path, reason: "cannot rename into place: \(reason)")
    }
    finished = true
  }

  /// Abandons the output: closes and removes the temporary file.
  public func discard() {
    guard !finished else { return }
    finished = true
    if fd >= 0 { close(fd); fd = -1 }
    unlink(temporaryPath)
  }

  /// Writes a whole small file (JSON side files) atomically.
  public static func write(_ text: String, to path: String) throws(FormatError) {
    let file = try AtomicFile(path: path)
    try file.write(Array(text.utf8))
    try file.commit()
  }
}
