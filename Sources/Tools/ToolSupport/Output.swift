// stdout: human tables and machine-readable JSON reports.

import Formats
import Foundation

public enum Output {
  /// Set on the ranks of an MPI job other than 0: rank 0 alone reports.
  nonisolated(unsafe) public static var silent = false

  public static func line(_ text: String = "") {
    if silent { return }
    print(text)
  }

  /// Writes `text` now, without a newline (text streamed as it is produced).
  public static func stream(_ text: String) {
    if silent { return }
    print(text, terminator: "")
    fflush(nil)  // every stream: naming `stdout` is not concurrency-safe in Swift 6
  }

  /// Prints a JSON report (pretty, keys in the order built) followed by a newline.
  public static func json(_ value: JSONValue) {
    line(JSONWriter.pretty(value, sortKeys: false))
  }

  /// Left-aligned text columns (numbers right-aligned), two spaces apart.
  public static func table(_ header: [String], _ rows: [[String]], rightAligned: Set<Int> = []) {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
    func format(_ row: [String]) -> String {
      row.enumerated().map { i, cell in
        let pad = String(repeating: " ", count: widths[i] - cell.count)
        return rightAligned.contains(i) ? pad + cell : cell + pad
      }.joined(separator: "  ").trimmingTrailingSpaces()
    }
    line(format(header))
    for row in rows { line(format(row)) }
  }
}

extension String {
  func trimmingTrailingSpaces() -> String {
    var s = self
    while s.last == " " { s.removeLast() }
    return s
  }
}

/// Number formatting without Foundation.
public enum Format {
  /// `value` with `digits` decimals (round half away from zero).
  public static func fixed(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    let whole = Int(scaled / scale)
    let fraction = Int(scaled - Double(whole) * scale)
    let sign = value < 0 && scaled != 0 ? "-" : ""
    if digits == 0 { return sign + String(whole) }
    let f = String(fraction)
    return sign + String(whole) + "." + String(repeating: "0", count: digits - f.count) + f
  }

  public static func percent(_ ratio: Double) -> String { fixed(ratio * 100, 2) + "%" }

  /// Bytes in decimal units as the hub counts them (B, KB, MB, GB).
  public static func bytes(_ n: Int) -> String {
    let units: [(Double, String)] = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")]
    for (size, name) in units where Double(n) >= size { return fixed(Double(n) / size, 2) + " " + name }
    return "\(n) B"
  }

  /// Three significant digits, as printf's %.3g (learning rates).
  public static func general(_ value: Double) -> String { String(format: "%.3g", value) }

  /// "1h2m", "3m4s", "5s"; "?" when unknown.
  public static func duration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
  }

  public static func shape(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ", ") + "]" }
}
