// Buffers whose size a file decides (a declared shape, a decompressed size) are allocated only after the
// size is checked against what this process can have: the memory available now and the address-space
// limit (ulimit -v). A hostile or mistaken size is refused as an error naming the file and tensor,
// instead of the allocator aborting the process or the kernel killing it.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

public enum MemoryLimit {
  /// MemAvailable from /proc/meminfo, in bytes (nil where it cannot be read).
  public static var available: Int? {
    guard let file = fopen("/proc/meminfo", "r") else { return nil }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, Int32(line.count), file) != nil {
      let text = String(cString: line)
      guard text.hasPrefix("MemAvailable:") else { continue }
      let digits = text.dropFirst("MemAvailable:".count).filter(\.isNumber)
      return Int(digits).map { $0 * 1024 }
    }
    return nil
  }

  /// The soft address-space limit (ulimit -v), or nil when unlimited.
  public static var addressSpace: Int? {
    var limit = rlimit()
    guard getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return nil }
    return Int(clamping: limit.rlim_cur)
  }

  /// Buffers smaller than this are not checked (reading /proc for every small tensor is not worth it).
  static let checkedFrom = 16 << 20

  /// Throws unless `bytes` could be allocated now.
  public static func check(_ bytes: Int, file: String, what: String) throws(FormatError) {
    guard bytes >= 0 else { throw .io(file: file, reason: "\(what): negative size \(bytes)") }
    guard bytes >= checkedFrom else { return }
    let limits = [available, addressSpace].compactMap { $0 }
    if let limit = limits.min(), bytes > limit {
      throw .io(file: file, reason: "\(what) needs \(bytes) bytes, more than this process can allocate now (\(limit) bytes)")
    }
  }
}

extension OwnedBytes {
  /// A buffer sized by a file: checked against MemoryLimit first, and a failed allocation is an error.
  public static func allocate(_ count: Int, file: String, what: String) throws(FormatError) -> OwnedBytes {
    try MemoryLimit.check(count, file: file, what: what)
    guard let buffer = OwnedBytes(failable: count) else {
      throw .io(file: file, reason: "\(what): cannot allocate \(count) bytes")
    }
    return buffer
  }
}
