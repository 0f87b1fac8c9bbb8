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
      let entry = Self.text(line)
      guard entry.hasPrefix("MemAvailable:") else { continue }
      let digits = entry.dropFirst("MemAvailable:".count).filter(\.isNumber)
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

  /// A line fgets wrote into `buffer`, up to its terminating zero.
  static func text(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// This process's mapped address space now (VmSize, from /proc/self/statm), or nil where unknown.
  static var mappedBytes: Int? {
    guard let file = fopen("/proc/self/statm", "r") else { return nil }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 256)
    guard fgets(&line, Int32(line.count), file) != nil,
      let pages = Self.text(line).split(separator: " ").first.flatMap({ Int($0) })
    else { return nil }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
  }

  /// Runs `body` with the address space limited to what is mapped now plus `headroom` bytes, for a
  /// library call that allocates what a file says (libhdf5 allocates a variable-length string's
  /// declared length, 13 GB in one corrupt file): such an allocation then fails inside the library,
  /// which reports an error, instead of the process growing until the kernel kills it. Only for short
  /// calls on one thread: the limit holds for the whole process while `body` runs.
  public static func capped<R, E: Error>(headroom: Int, _ body: () throws(E) -> R) throws(E) -> R {
    let resource = __rlimit_resource_t(RLIMIT_AS.rawValue)
    var old = rlimit()
    guard let mapped = mappedBytes, getrlimit(resource, &old) == 0 else { return try body() }
    let (wanted, overflow) = mapped.addingReportingOverflow(headroom)
    guard !overflow, old.rlim_cur == rlim_t.max || rlim_t(wanted) < old.rlim_cur else { return try body() }
    var capped = old
    capped.rlim_cur = rlim_t(wanted)
    guard setrlimit(resource, &capped) == 0 else { return try body() }
    defer { setrlimit(resource, &old) }
    return try body()
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
