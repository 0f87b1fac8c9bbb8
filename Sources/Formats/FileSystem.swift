#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The few file-system questions the checkpoint readers ask, without Foundation.
public enum FileSystem {
  static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

  static func isDirectory(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
  }

  /// Size in bytes (0 when the file cannot be stat'ed).
  public static func size(_ path: String) -> Int {
    var info = stat()
    return stat(path, &info) == 0 ? Int(info.st_size) : 0
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
  public static func removeTree(_ path: String) {
    if isDirectory(path), let names = try? list(path) {
      for name in names { removeTree(path + "/" + name) }
      rmdir(path)
    } else {
      unlink(path)
    }
  }
}
