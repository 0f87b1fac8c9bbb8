// Shared by the targets linked against the Formats module (compiled into each of them): scratch files in
// /dev/shm for readers that take a path, and the failure report. A scratch name carries the target and
// the process id, so parallel fuzzers never share one; fuzz/run.sh removes them after each run.

@testable import Formats

#if canImport(Glibc)
  import Glibc
#endif

enum Scratch {
  /// /dev/shm when it exists (no disk writes per execution), else /tmp.
  static let root: String = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"

  /// A per-process path: <root>/espalier-fuzz-<target>-<pid><suffix>.
  static func path(_ target: String, _ suffix: String = "") -> String {
    "\(root)/espalier-fuzz-\(target)-\(getpid())\(suffix)"
  }

  /// Writes `bytes` to `path`, replacing what was there.
  static func write(_ bytes: UnsafeRawBufferPointer, to path: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { fatalError("fuzz harness: cannot create \(path)") }
    defer { close(fd) }
    var done = 0
    while done < bytes.count {
      let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else { fatalError("fuzz harness: cannot write \(path)") }
      done += n
    }
  }

  static func write(_ text: String, to path: String) {
    var bytes = Array(text.utf8)
    bytes.withUnsafeMutableBytes { write(UnsafeRawBufferPointer($0), to: path) }
  }

  static func makeDirectory(_ path: String) {
    guard mkdir(path, 0o700) == 0 || errno == EEXIST else { fatalError("fuzz harness: cannot create \(path)") }
  }

  static func remove(_ path: String) { unlink(path) }
}

/// A property of the reader failed: crash with a message libFuzzer records with the input.
func propertyFailed(_ message: String) -> Never { fatalError("property violated: \(message)") }

/// Whether `text` is one valid JSON document (what every JSON file we generate must be).
func parsesAsJSON(_ text: String) -> Bool { (try? JSONParser.parse(Array(text.utf8))) != nil }

/// Short text covering the pre-tokenizer's classes: letters, digits, contractions, punctuation, runs of
/// spaces, a newline, non-ASCII letters, an emoji, and a GPT-2 special token.
let fuzzSampleText = "Hello, world! It's 2026 — naïve café  \n\t日本語 🙂 x=3.14 <|endoftext|>end"
