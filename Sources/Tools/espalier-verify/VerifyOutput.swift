// How espalier-verify reports: a table of tensors and a line per check, or one JSON object.

import Formats
import Surgery
import ToolSupport

enum VerifyOutput {
  static func status(_ v: TensorVerdict) -> String { v.failures.isEmpty ? "ok" : "FAIL: " + v.failures.joined(separator: "; ") }

  static func print(_ r: VerifyReport, all: Bool, seconds: Double) {
    let shown = r.tensors.filter { all || $0.projection || !$0.failures.isEmpty }
    let rows = shown.map { v -> [String] in
      [
        v.info.name, v.info.dtype.rawValue, Format.shape(v.info.shape),
        v.sparsity.map { Format.percent($0.ratio) } ?? "-",
        v.pattern.map { $0.conforms ? "yes" : "no" } ?? "-",
        v.zerosFilled.map { f in "\(f)/\(v.newZeros ?? 0)" } ?? (v.identical.map { $0 ? "same" : "changed" } ?? "-"),
        status(v),
      ]
    }
    Output.table(["tensor", "dtype", "shape", "sparsity", r.options.pattern.map { "\($0)" } ?? "N:M", "filled/new", "status"], rows, rightAligned: [3])
    Output.line()
    let global = r.globalSparsity
    let failed = r.tensors.filter { !$0.failures.isEmpty }.count
    Output.line("model: \(r.model)" + (r.base.map { "  base: \($0)" } ?? "") + (r.adapter.map { "  adapter: \($0) (\(r.method?.rawValue ?? "?"))" } ?? ""))
    Output.line("tensors: \(r.tensors.count) checked, \(failed) failed  projections: \(r.tensors.filter(\.projection).count)  "
      + "global sparsity: \(Format.percent(global.ratio))" + (r.options.minSparsity.map { " (minimum \(Format.percent($0)))" } ?? ""))
    for note in r.notes { Output.line("note: \(note)") }
    for failure in r.failures { Output.line("FAIL: \(failure)") }
    Output.line((r.passed ? "PASS" : "FAIL") + "  (\(Format.fixed(seconds, 2)) s)")
  }

  static func json(_ r: VerifyReport, seconds: Double) -> JSONValue {
    func number(_ n: Int) -> JSONValue { .number(String(n)) }
    func optional(_ n: Int?) -> JSONValue { n.map(number) ?? .null }
    let tensors = r.tensors.map { v -> JSONValue in
      var o = JSONObject([
        ("name", .string(v.info.name)), ("dtype", .string(v.info.dtype.rawValue)), ("shape", .array(v.info.shape.map(number))),
        ("file", .string(v.file)), ("projection", .bool(v.projection)),
        ("zeros", optional(v.sparsity?.zeros)), ("sparsity", v.sparsity.map { .number(Format.fixed($0.ratio, 6)) } ?? .null),
        ("nonfinite", number(v.nonfinite)),
      ])
      if let p = v.pattern { o["pattern_violations"] = number(p.violations) }
      if v.zerosFilled != nil { o["zeros_filled"] = optional(v.zerosFilled); o["new_zeros"] = optional(v.newZeros) }
      if let same = v.identical { o["identical"] = .bool(same) }
      if let m = v.adapterMismatches { o["adapter_mismatches"] = number(m); o["adapter_max_ulps"] = .number(Format.fixed(v.adapterMaxUlps ?? 0, 4)) }
      o["passed"] = .bool(v.failures.isEmpty)
      o["failures"] = .array(v.failures.map { .string($0) })
      return .object(o)
    }
    let global = r.globalSparsity
    return .object(JSONObject([
      ("model", .string(r.model)), ("base", r.base.map { .string($0) } ?? .null), ("adapter", r.adapter.map { .string($0) } ?? .null),
      ("method", r.method.map { .string($0.rawValue) } ?? .null), ("passed", .bool(r.passed)),
      ("global_sparsity", .number(Format.fixed(global.ratio, 6))), ("projection_elements", number(global.elements)),
      ("projection_zeros", number(global.zeros)),
      ("min_sparsity", r.options.minSparsity.map { .number(String($0)) } ?? .null),
      ("pattern", r.options.pattern.map { .string("\($0)") } ?? .null),
      ("failures", .array(r.failures.map { .string($0) })), ("notes", .array(r.notes.map { .string($0) })),
      ("seconds", .number(Format.fixed(seconds, 3))), ("tensors", .array(tensors)),
    ]))
  }
}
