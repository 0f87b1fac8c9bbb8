// What every tool promises about its output path OUT, checked once before any work starts:
//   - the inputs are never modified: OUT may not be an input, nor a directory that holds one;
//   - an existing OUT is replaced only with --overwrite, and only when it is a regular file or a
//     directory holding nothing but files Espalier writes (a checkpoint, an adapter, a training run);
//     symbolic links, devices, pipes and directories with anything else in them are refused;
//   - partial outputs that a dead process left beside OUT (NAME.partial-PID, NAME.old-PID and
//     .NAME.PID.N.tmp) are removed, so an interrupted run costs no disk space after the next one.
// Writers then build OUT under a temporary name and rename it into place (AtomicFile, AtomicDirectory).

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

public enum OutputPath {
  /// What may already be at OUT without --overwrite: nothing, or (finetune --resume) a training run.
  public enum Existing: Sendable { case refused, resumable }

  /// Checks OUT against the rules above (after removing dead partials beside it); throws `.io` naming
  /// OUT and the rule when it may not be written.
  public static func claim(
    _ output: String, overwrite: Bool, inputs: [String], existing: Existing = .refused
  ) throws(FormatError) {
    let path = trimmed(output)
    guard !path.isEmpty else { throw .io(file: output, reason: "empty output path") }
    removeDeadPartials(beside: path)
    var info = stat()
    guard lstat(path, &info) == 0 else {
      if errno == ENOENT { return try refuseInputs(path, inputs, replacing: false) }
      throw .io(file: path, reason: "cannot inspect the output path: \(systemErrorText())")
    }
    if (info.st_mode & S_IFMT) == S_IFLNK {
      throw .io(file: path, reason: "is a symbolic link; Espalier never writes through one (remove the link, or name its target)")
    }
    try refuseInputs(path, inputs, replacing: !(existing == .resumable && !overwrite))
    switch info.st_mode & S_IFMT {
    case S_IFREG:
      guard overwrite else { throw .io(file: path, reason: "already exists (pass --overwrite to replace it)") }
    case S_IFDIR:
      if existing == .resumable && !overwrite { return }
      guard overwrite else { throw .io(file: path, reason: "already exists (pass --overwrite to replace it)") }
      let foreign = try FileSystem.list(path).filter { !writtenByEspalier($0) }.sorted()
      guard foreign.isEmpty else {
        let shown = foreign.prefix(3).joined(separator: ", ") + (foreign.count > 3 ? ", …" : "")
        throw .io(
          file: path,
          reason: "holds files Espalier did not write (\(shown)); --overwrite replaces only Espalier's own output, so remove them or choose another OUT")
      }
    default:
      throw .io(file: path, reason: "is not a regular file or directory (a device, pipe or socket); Espalier will not replace it")
    }
  }

  /// The names Espalier writes into an output directory: checkpoint shards and their index, the HF side
  /// files it copies, sparsity.json, a PEFT adapter with espalier.json, a training run's files, and its
  /// own temporary files.
  public static func writtenByEspalier(_ name: String) -> Bool {
    let fixed: Set<String> = [
      "model.safetensors", ShardIndex.fileName, "sparsity.json", "adapter_model.safetensors", "adapter_config.json",
      "espalier.json", "checkpoints", "train_log.jsonl", "base", ".losa-work", "losa.json", ".adapter",
    ]
    if fixed.contains(name) || SideFile.hfNames.contains(name) { return true }
    if isShardName(name) || partialOwner(name) != nil { return true }
    return false
  }

  /// "model-00001-of-00003.safetensors".
  static func isShardName(_ name: String) -> Bool {
    let parts = name.split(separator: "-", omittingEmptySubsequences: false)
    guard parts.count == 4, parts[0] == "model", parts[2] == "of", parts[3].hasSuffix(".safetensors") else { return false }
    let count = parts[3].dropLast(".safetensors".count)
    return [parts[1], count].allSatisfy { $0.count == 5 && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }
  }

  /// The process id in a temporary name Espalier makes beside an output (`NAME.partial-PID`,
  /// `NAME.old-PID`, `.NAME.PID.N.tmp`), or nil for any other name.
  public static func partialOwner(_ name: String) -> Int32? {
    if let dash = name.lastIndex(of: "-") {
      let digits = name[name.index(after: dash)...]
      let head = name[..<dash]
      if !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), head.hasSuffix(".partial") || head.hasSuffix(".old") {
        return Int32(digits)
      }
    }
    if name.hasPrefix("."), name.hasSuffix(".tmp") {
      let parts = name.dropLast(4).split(separator: ".")
      if parts.count >= 3, parts[parts.count - 1].allSatisfy({ $0.isASCII && $0.isNumber }) {
        return Int32(parts[parts.count - 2])
      }
    }
    return nil
  }

  /// Removes the temporary outputs of processes that no longer run, for OUT's name in OUT's directory.
  public static func removeDeadPartials(beside path: String) {
    let (directory, name) = split(path)
    guard let names = try? FileSystem.list(directory.isEmpty ? "." : directory) else { return }
    for entry in names {
      guard let pid = partialOwner(entry), pid > 0, pid != getpid(), !isRunning(pid) else { continue }
      let stem = entry.hasPrefix(".") && entry.hasSuffix(".tmp") ? String(entry.dropFirst()) : entry
      guard stem.hasPrefix(name + ".") else { continue }
      FileSystem.removeTree(directory + entry)
    }
  }

  static func isRunning(_ pid: Int32) -> Bool { kill(pid, 0) == 0 || errno == EPERM }

  /// OUT may not be an input or hold one (replacing it would delete the input), and an OUT that would be
  /// replaced may not lie inside an input directory (replacing it would change the input).
  public static func refuseInputs(_ path: String, _ inputs: [String], replacing: Bool) throws(FormatError) {
    guard let out = resolved(path) ?? resolved(split(path).0.isEmpty ? "." : split(path).0).map({ $0 + "/" + split(path).1 })
    else { return }
    func within(_ a: String, _ b: String) -> Bool { a == b || a.hasPrefix(b == "/" ? "/" : b + "/") }
    for input in inputs {
      guard let source = resolved(input) else { continue }
      if within(source, out) {
        throw .io(file: path, reason: "is the input \(input) or holds it; Espalier never modifies its input (choose another OUT)")
      }
      if replacing && within(out, source) {
        throw .io(file: path, reason: "lies inside the input \(input); replacing it would modify the input (choose another OUT)")
      }
    }
  }

  /// The canonical absolute path (symlinks resolved), or nil when it does not exist.
  static func resolved(_ path: String) -> String? {
    guard let real = realpath(path, nil) else { return nil }
    defer { free(real) }
    return String(cString: real)
  }

  static func trimmed(_ path: String) -> String {
    var p = path
    while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
    return p
  }

  /// ("dir/", "name") for "dir/name"; ("", "name") for "name".
  static func split(_ path: String) -> (String, String) {
    guard let slash = path.lastIndex(of: "/") else { return ("", path) }
    return (String(path[...slash]), String(path[path.index(after: slash)...]))
  }
}
