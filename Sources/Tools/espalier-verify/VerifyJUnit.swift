// espalier verify --junit FILE: the verdict as a JUnit XML report, which CI systems (GitHub Actions test
// reporters, GitLab's `artifacts:reports:junit`, Jenkins) show as test results. One <testsuite> for the
// checkpoint, a <testcase> per check: the checkpoint-level ones (classname "checkpoint") and each tensor's
// (classname the tensor's name), a failed check with a <failure> holding its messages. The layout follows
// the Apache Ant JUnit schema (fixtures/junit/JUnit.xsd), against which the tests validate it.

import Foundation
import Formats
import Surgery
import ToolSupport

enum VerifyJUnit {
  static func xml(_ r: VerifyReport, seconds: Double, timestamp: Date = Date(), hostname: String = ProcessInfo.processInfo.hostName) -> String {
    var cases: [String] = []
    func add(_ classname: String, _ check: VerifyCheck) {
      let head = "    <testcase classname=\"\(escape(classname))\" name=\"\(escape(check.name))\" time=\"0\""
      guard !check.passed else {
        cases.append(head + "/>")
        return
      }
      let message = check.failures.count == 1 ? check.failures[0] : "\(check.failures.count) problems: " + check.failures[0] + ", ..."
      cases.append(
        head + ">\n      <failure message=\"\(escape(message))\" type=\"\(escape(check.name))\">"
          + escape(check.failures.joined(separator: "\n")) + "</failure>\n    </testcase>")
    }
    for check in r.checks { add("checkpoint", check) }
    for v in r.tensors { for check in v.checks { add(v.info.name, check) } }
    let failures = r.checks.filter { !$0.passed }.count + r.tensors.reduce(0) { $0 + $1.checks.filter { !$0.passed }.count }
    var properties = [("model", r.model), ("global_sparsity", Format.fixed(r.globalSparsity.ratio, 6))]
    if let base = r.base { properties.append(("base", base)) }
    if let adapter = r.adapter { properties.append(("adapter", adapter)) }
    if let method = r.method { properties.append(("method", method.rawValue)) }
    if let pattern = r.options.pattern { properties.append(("pattern", "\(pattern)")) }
    if let minimum = r.options.minSparsity { properties.append(("min_sparsity", String(minimum))) }
    var lines = [
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
      "<testsuite name=\"\(escape("espalier verify " + r.model))\" timestamp=\"\(isoSeconds(timestamp))\" "
        + "hostname=\"\(escape(hostname.isEmpty ? "localhost" : hostname))\" tests=\"\(cases.count)\" failures=\"\(failures)\" "
        + "errors=\"0\" skipped=\"0\" time=\"\(Format.fixed(seconds, 3))\">",
      "  <properties>",
    ]
    lines += properties.map { "    <property name=\"\(escape($0.0))\" value=\"\(escape($0.1))\"/>" }
    lines.append("  </properties>")
    lines += cases
    let notes = r.notes.map { "note: " + $0 }.joined(separator: "\n")
    lines.append("  <system-out>\(escape(notes))</system-out>")
    lines.append("  <system-err></system-err>")
    lines.append("</testsuite>")
    return lines.joined(separator: "\n") + "\n"
  }

  /// "2026-12-02T01:23:45" in UTC (the schema's pattern has no zone).
  static func isoSeconds(_ date: Date) -> String {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss"
    return formatter.string(from: date)
  }

  /// Text for an XML attribute or element: the five markup characters escaped, and characters XML 1.0
  /// cannot hold at all (controls other than tab, newline and return) replaced by U+FFFD.
  static func escape(_ text: String) -> String {
    MarkupText.escape(text, apostrophe: "&apos;") { v in v < 0x20 || (0xFFFE...0xFFFF).contains(v) }
  }
}
