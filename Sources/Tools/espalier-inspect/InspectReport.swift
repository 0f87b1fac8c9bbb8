// How espalier-inspect shows a CheckpointReport: a table for people, JSON for pipelines.

import Formats
import Surgery
import ToolSupport

enum InspectReport {
  static func printTable(_ report: CheckpointReport) {
    var header = ["tensor", "dtype", "shape", "bytes", "sparsity"]
    if report.pattern != nil { header.append(report.pattern!.description) }
    let rows = report.tensors.map { t -> [String] in
      var row = [t.info.name, t.info.dtype.rawValue, Format.shape(t.info.shape), String(t.bytes),
        t.sparsity.map { Format.percent($0.ratio) } ?? "-"]
      if report.pattern != nil { row.append(patternCell(t.pattern)) }
      return row
    }
    Output.table(header, rows, rightAligned: [3, 4])
    Output.line()
    Output.line("files: \(report.files.count)  tensors: \(report.tensors.count)  parameters: \(report.totalElements)  "
      + "bytes: \(report.totalBytes) (\(Format.bytes(report.totalBytes)))")
    if let (format, stored) = report.compressed {
      Output.line("compressed: \(format), \(Format.bytes(stored)) on disk (\(Format.fixed(Double(stored) / Double(max(1, report.totalBytes)), 4)) of dense)")
    }
    let global = report.globalSparsity
    if global.elements > 0 {
      Output.line("sparsity: \(Format.percent(global.ratio)) (\(global.zeros) zeros of \(global.elements))")
    }
    if let pattern = report.pattern {
      let summary = report.patternSummary
      Output.line("\(pattern): \(summary.conforming) of \(summary.checked) tensors of rank >= 2 conform")
    }
  }

  static func patternCell(_ stats: PatternStats?) -> String {
    guard let stats else { return "-" }
    if !stats.shapeFits { return "cols % \(stats.pattern.m) != 0" }
    return stats.violations == 0 ? "ok" : "\(stats.violations)/\(stats.groups) groups fail"
  }

  static func json(_ report: CheckpointReport) -> JSONValue {
    func num(_ v: Int) -> JSONValue { .number(String(v)) }
    func ratio(_ r: Double) -> JSONValue { .number(Format.fixed(r, 6)) }
    let tensors: [JSONValue] = report.tensors.map { t in
      var o = JSONObject([
        ("name", .string(t.info.name)), ("dtype", .string(t.info.dtype.rawValue)),
        ("shape", .array(t.info.shape.map(num))), ("bytes", num(t.bytes)), ("file", .string(t.file)),
      ])
      if let s = t.sparsity { o["zeros"] = num(s.zeros); o["sparsity"] = ratio(s.ratio) }
      if let p = t.pattern {
        o["pattern"] = .object(JSONObject([
          ("conforms", .bool(p.conforms)), ("shape_fits", .bool(p.shapeFits)),
          ("groups", num(p.groups)), ("violations", num(p.violations)),
        ]))
      }
      return .object(o)
    }
    var root = JSONObject([
      ("path", .string(report.path)), ("files", .array(report.files.map { .string($0) })),
      ("tensor_count", num(report.tensors.count)), ("parameters", num(report.totalElements)),
      ("bytes", num(report.totalBytes)),
    ])
    if let (format, stored) = report.compressed {
      root["compressed"] = .object(JSONObject([("format", .string(format)), ("stored_bytes", num(stored))]))
    }
    let global = report.globalSparsity
    if global.elements > 0 {
      root["zeros"] = num(global.zeros)
      root["sparsity"] = ratio(global.ratio)
    }
    if let pattern = report.pattern {
      let summary = report.patternSummary
      root["pattern"] = .object(JSONObject([
        ("pattern", .string(pattern.description)), ("checked", num(summary.checked)),
        ("conforming", num(summary.conforming)),
      ]))
    }
    root["tensors"] = .array(tensors)
    return .object(root)
  }
}
