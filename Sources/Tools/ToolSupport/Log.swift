// stderr output: logs, errors and progress. stdout is reserved for data (tables and --json reports).

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

public enum Log {
  public static func info(_ message: String) { write(message + "\n") }
  public static func error(_ message: String) { write(errorPrefix + "error: " + message + "\n", always: true) }
  public static func warning(_ message: String) { write("warning: " + message + "\n") }

  /// Ranks of an MPI job other than 0 print only their errors, prefixed with their rank.
  nonisolated(unsafe) private static var silent = false
  nonisolated(unsafe) private static var errorPrefix = ""

  public static func quiet(prefix: String) {
    silent = true
    errorPrefix = prefix
  }

  static func write(_ text: String, always: Bool = false) {
    if silent && !always { return }
    var bytes = Array(text.utf8)
    _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
  }

  static var stderrIsTerminal: Bool { isatty(2) != 0 }
}

/// A progress line on stderr: redrawn in place on a terminal, a plain line every `every` steps otherwise.
public final class Progress {
  private let label: String
  private var total: Int
  private let interactive = Log.stderrIsTerminal
  private var lastPrinted = -1
  private var every: Int

  public init(_ label: String, total: Int) {
    self.label = label
    self.total = total
    every = Swift.max(1, total / 10)
  }

  /// Updates with a total known only now (a total of 0 at creation).
  public func update(_ done: Int, of newTotal: Int) {
    total = newTotal
    every = Swift.max(1, newTotal / 10)
    update(done)
  }

  public func update(_ done: Int, detail: String = "") {
    guard total > 0 else { return }
    let percent = done * 100 / total
    if interactive {
      Log.write("\r\u{1B}[K\(label) \(done)/\(total) (\(percent)%) \(detail)")
      if done == total { Log.write("\n") }
    } else if done == total || done - lastPrinted >= every {
      lastPrinted = done
      Log.write("\(label) \(done)/\(total) (\(percent)%) \(detail)\n")
    }
  }
}

/// Wall-clock time since creation, for summaries.
public struct Stopwatch {
  private let start: Double
  public init() { start = Stopwatch.now() }
  public var seconds: Double { Stopwatch.now() - start }
  static func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
  }
}
