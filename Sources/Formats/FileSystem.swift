#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The few file-system questions the checkpoint readers ask, without Foundation.
public enum FileSystem {
  public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

  public static func isDirectory(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
  }

  /// `path` made absolute against the working directory (symbolic links and ".." are left as they are);
  /// `path` itself when it is absolute or the working directory cannot be read.
  public static func absolute(_ path: String) -> String {
    guard !path.hasPrefix("/"), let cwd = getcwd(nil, 0) else { return path }
    defer { free(cwd) }
    let directory = String(cString: cwd)
    return (directory == "/" ? "" : directory) + "/" + path
  }

  /// Size in bytes (0 when the file cannot be stat'ed).
  public static func size(_ path: String) -> Int {
    var info = stat()
    return stat(path, &info) == 0 ? Int(info.st_size) : 0
  }

  /// Reads exactly `count` bytes at `offset` of the file into `buffer`.
  public static func read(_ path: String, offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws(FormatError) {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .io(file: path, reason: "cannot open: \(systemErrorText())") }
    defer { close(fd) }
    var done = 0
    while done < count {
      let n = pread(fd, buffer + done, count - done, off_t(offset + done))
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else {
        throw .io(file: path, reason: n == 0 ? "ends before byte \(offset + count)" : "cannot read: \(systemErrorText())")
      }
      done += n
    }
  }

  /// `count` bytes at `offset` of the file.
  public static func bytes(_ path: String, offset: Int, count: Int) throws(FormatError) -> [UInt8] {
    guard count > 0 else { return [] }
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 16)
    defer { buffer.deallocate() }
    try read(path, offset: offset, count: count, into: buffer)
    return Array(UnsafeRawBufferPointer(start: buffer, count: count))
  }

  static func list(_ directory: String) throws(FormatError) -> [String] {
    guard let dir = opendir(directory) else {
      throw .io(file: directory, reason: "cannot list: \(systemErrorText())")
    }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names
  }
}

extension FileSystem {
  /// Removes a file, or a directory and everything under it (best effort; used to clean up partial output).
  /// Symbolic links are removed, never followed: what a link points to is not Espalier's to delete.
  public static func removeTree(_ path: String) {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    if (info.st_mode & S_IFMT) == S_IFDIR, let names = try? list(path) {
      for name in names { removeTree(path + "/" + name) }
      rmdir(path)
    } else {
      unlink(path)
    }
  }
}

extension FileSystem {
  /// mkdir -p.
  public static func makeDirectories(_ path: String) throws(FormatError) {
    guard !isDirectory(path) else { return }
    if let slash = path.lastIndex(of: "/"), slash != path.startIndex { try makeDirectories(String(path[..<slash])) }
    guard mkdir(path, 0o755) == 0 || (errno == EEXIST && isDirectory(path)) else {
      throw .io(file: path, reason: "cannot create the directory: \(systemErrorText())")
    }
  }

  /// Appends text to a file, creating it when missing.
  public static func append(_ text: String, to path: String) throws(FormatError) {
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw .io(file: path, reason: "cannot open for appending: \(systemErrorText())") }
    defer { close(fd) }
    var bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
      let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
      if n < 0 {
        if errno == EINTR { continue }
        throw .io(file: path, reason: "write failed: \(systemErrorText())")
      }
      done += n
    }
  }

  /// The checkpoint directory of a path: itself when it is a directory, else its parent.
  public static func checkpointDirectory(of path: String) -> String {
    if isDirectory(path) { return path }
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return String(path[..<slash])
  }
}
