// The page of espalier report: one self-contained HTML file (inline CSS and SVG, one small inline script,
// nothing fetched: its Content-Security-Policy forbids every other source). Sections: the loss curves of
// all runs, per-layer sparsity before and after the merge, per-layer relative weight change, the
// perplexity table, the runs' settings side by side, and per run its notes and per-layer table. Every
// text that comes from a file or a flag passes through HTMLText.escape.

import Formats
import Foundation
import Surgery
import ToolSupport

enum HTMLText {
  /// Text for an element or a quoted attribute: the five markup characters escaped, and characters HTML
  /// may not hold (controls other than tab, newline and return, noncharacters) replaced by U+FFFD.
  static func escape(_ text: String) -> String {
    MarkupText.escape(text, apostrophe: "&#39;") { v in
      v < 0x20 || (0x7F...0x9F).contains(v) || (0xFDD0...0xFDEF).contains(v) || v & 0xFFFE == 0xFFFE
    }
  }
}

/// A row of the perplexity table.
struct EvalRow {
  var label: String
  var file: String
  var record: PerplexityRecord
}

enum ReportHTML {
  static func page(title: String, runs: [RunReport], evals: [EvalRow]) -> String {
    let measured = runs.filter { $0.effect != nil }
    var body = "<h1>\(HTMLText.escape(title))</h1>\n"
    body += "<p class=\"meta\">\(runs.count) run\(runs.count == 1 ? "" : "s"): "
      + runs.enumerated().map { i, r in "<span class=\"swatch\" style=\"background:\(SVGChart.color(i))\"></span>\(HTMLText.escape(r.label))" }.joined(separator: ", ")
      + " · made by <code>espalier report</code></p>\n"
    body += section("loss", "Training loss", lossChart(runs) + lossNotes(runs))
    if measured.isEmpty {
      let why = "<p class=\"note\">No run has an adapter to measure yet (each run's notes below say why).</p>"
      body += section("sparsity", "Per-layer sparsity, before and after the merge", why)
      body += section("change", "Per-layer weight change", why)
    } else {
      body += section("sparsity", "Per-layer sparsity, before and after the merge", sparsityChart(runs) + """
        <p class="explain">Zeros of the adapted projection weights of each decoder layer, in the base (before, light) and in the \
        merged weights <i>W′</i> that <code>espalier merge</code> writes (after, solid). LoRS, SQFT, SPP and LoSA keep the \
        base's zeros exactly; LoRA fills them.</p>
        """)
      body += section("change", "Per-layer weight change ‖W′ − W‖ / ‖W‖", changeChart(runs) + """
        <p class="explain">Frobenius norm of the merged change over that of the base weights, summed over the adapted projections of each layer.</p>
        """)
    }
    body += section("perplexity", "Perplexity", perplexityTable(evals))
    body += section("settings", "Settings", settingsTable(runs))
    body += "<section id=\"runs\"><h2>Runs</h2>\n" + runs.enumerated().map { runSection($1, index: $0) }.joined() + "</section>\n"
    return """
      <!DOCTYPE html>
      <html lang="en">
      <head>
      <meta charset="utf-8">
      <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
      <meta name="viewport" content="width=device-width, initial-scale=1">
      <meta name="generator" content="espalier report">
      <title>\(HTMLText.escape(title))</title>
      <style>\(style)</style>
      </head>
      <body data-charts="\(measured.isEmpty ? 1 : 3)">
      \(body)<script>\(script)</script>
      </body>
      </html>

      """
  }

  static func section(_ id: String, _ heading: String, _ content: String) -> String {
    "<section id=\"\(id)\"><h2>\(HTMLText.escape(heading))</h2>\n\(content)\n</section>\n"
  }

  /// What the loss chart cannot show: runs without a log or steps, and steps whose loss was not finite.
  static func lossNotes(_ runs: [RunReport]) -> String {
    var notes: [(String, String)] = []
    for r in runs {
      guard let log = r.files.log else {
        notes.append((r.label, "no train_log.jsonl in the run directory: nothing to draw"))
        continue
      }
      if log.entries.isEmpty { notes.append((r.label, "the step log is empty: no step finished, nothing to draw")) }
      let bad = log.entries.filter { !$0.loss.isFinite }.map(\.step)
      if !bad.isEmpty {
        let shown = bad.prefix(10).map(String.init).joined(separator: ", ") + (bad.count > 10 ? ", …" : "")
        notes.append((r.label, "\(bad.count) step(s) with a non-finite loss (step \(shown)), not drawn: the line breaks there"))
      }
    }
    guard !notes.isEmpty else { return "" }
    return "<ul class=\"notes\">" + notes.map { "<li><b>\(HTMLText.escape($0.0))</b>: \(HTMLText.escape($0.1))</li>" }.joined() + "</ul>"
  }

  // MARK: charts

  static func lossChart(_ runs: [RunReport]) -> String {
    let series = runs.enumerated().map { i, r in
      SVGChart.Series(label: r.label, color: SVGChart.color(i), points: (r.files.log?.entries ?? []).map { (Double($0.step), $0.loss) })
    }
    return SVGChart.line(id: "loss-chart", title: "Training loss per step", xLabel: "step", yLabel: "loss", series: series, integerX: true)
  }

  /// The layers any measured run has, in order, as category labels, and each run's layer lookup.
  static func layerAxis(_ runs: [RunReport]) -> (labels: [String], keys: [Int?]) {
    var keys: [Int?] = []
    for r in runs { for l in r.effect?.layers ?? [] where !keys.contains(l.layer) { keys.append(l.layer) } }
    keys.sort { ($0 ?? Int.max) < ($1 ?? Int.max) }
    return (keys.map { $0.map(String.init) ?? "other" }, keys)
  }

  static func values(_ r: RunReport, _ keys: [Int?], _ value: (LayerEffect) -> Double) -> [Double] {
    let layers = r.effect?.layers ?? []
    return keys.map { key in layers.first { $0.layer == key }.map(value) ?? .nan }
  }

  static func sparsityChart(_ runs: [RunReport]) -> String {
    let (labels, keys) = layerAxis(runs)
    var series: [SVGChart.BarSeries] = []
    for (i, r) in runs.enumerated() where r.effect != nil {
      series.append(.init(label: r.label + " before", color: SVGChart.color(i), opacity: 0.3, values: values(r, keys, \.sparsityBefore)))
      series.append(.init(label: r.label + " after", color: SVGChart.color(i), values: values(r, keys, \.sparsityAfter)))
    }
    return SVGChart.bars(id: "sparsity-chart", title: "Sparsity of the adapted projections per layer", xLabel: "layer", yLabel: "zeros",
      categories: labels, series: series, yRange: 0...1, format: SVGChart.percent)
  }

  static func changeChart(_ runs: [RunReport]) -> String {
    let (labels, keys) = layerAxis(runs)
    let series = runs.enumerated().compactMap { i, r in
      r.effect == nil ? nil : SVGChart.BarSeries(label: r.label, color: SVGChart.color(i), values: values(r, keys, \.relativeChange))
    }
    return SVGChart.bars(id: "change-chart", title: "Relative weight change per layer", xLabel: "layer", yLabel: "‖W′ − W‖ / ‖W‖",
      categories: labels, series: series)
  }

  // MARK: tables

  static func perplexityTable(_ evals: [EvalRow]) -> String {
    guard !evals.isEmpty else {
      return "<p class=\"note\">No perplexity report: pass <code>--eval LABEL=FILE</code> (from <code>espalier eval --text FILE --json</code>) or keep <code>eval*.json</code> files in a run directory.</p>"
    }
    let rows = evals.map { e -> String in
      let r = e.record
      let windows = r.windows.map { w in r.seqLen.map { "\(w) × \($0)" } ?? "\(w)" } ?? "—"
      return "<tr class=\"eval\" data-perplexity=\"\(exact(r.perplexity))\"><td title=\"\(HTMLText.escape(e.file))\">\(HTMLText.escape(e.label))</td>"
        + "<td class=\"num\">\(number(r.perplexity, 3))</td><td class=\"num\">\(number(r.nll, 4))</td>"
        + "<td class=\"num\">\(windows)</td><td class=\"num\">\(r.tokens.map(String.init) ?? "—")</td></tr>"
    }
    return "<table class=\"perplexity\" data-rows=\"\(evals.count)\"><thead><tr><th>model</th><th>perplexity</th><th>nll (nats/token)</th><th>windows × seq_len</th><th>tokens scored</th></tr></thead><tbody>"
      + rows.joined() + "</tbody></table>"
  }

  /// The runs side by side: what the log and espalier.json say, then every setting in the order the
  /// runs recorded them; rows where runs differ are marked.
  static func settingsTable(_ runs: [RunReport]) -> String {
    var rows: [(String, [String])] = [
      ("directory", runs.map { $0.files.directory }),
      ("method", runs.map { $0.files.method ?? ($0.files.adapterConfig != nil ? "lora (plain PEFT adapter)" : "—") }),
      ("base", runs.map { $0.base ?? $0.files.recordedBase ?? "—" }),
      ("steps logged", runs.map { $0.files.log.map { String($0.entries.count) } ?? "—" }),
      ("final loss", runs.map { $0.finalLoss.map { number($0, 4) } ?? "—" }),
      ("tokens", runs.map { r in r.files.log.map { String($0.entries.reduce(0) { $0 + ($1.tokens ?? 0) }) } ?? "—" }),
      ("training time", runs.map { r in r.files.log?.entries.last?.elapsed.map { Format.duration($0) } ?? "—" }),
    ]
    var keys: [String] = []
    for r in runs { for k in r.files.settings.keys where !keys.contains(k) && k != "method" { keys.append(k) } }
    for k in keys { rows.append((k, runs.map { $0.files.settings[k].map(show) ?? "—" })) }
    let head = "<tr><th>setting</th>" + runs.enumerated().map { i, r in
      "<th><span class=\"swatch\" style=\"background:\(SVGChart.color(i))\"></span>\(HTMLText.escape(r.label))</th>"
    }.joined() + "</tr>"
    let body = rows.map { key, cells in
      "<tr\(Set(cells).count > 1 ? " class=\"differs\"" : "")><th>\(HTMLText.escape(key))</th>" + cells.map { "<td>\(HTMLText.escape($0))</td>" }.joined() + "</tr>"
    }.joined()
    return "<table class=\"settings\"><thead>\(head)</thead><tbody>\(body)</tbody></table>"
  }

  static func runSection(_ r: RunReport, index: Int) -> String {
    var html = "<article class=\"run\"><h3><span class=\"swatch\" style=\"background:\(SVGChart.color(index))\"></span>\(HTMLText.escape(r.label))</h3>"
    html += "<p class=\"meta\"><code>\(HTMLText.escape(r.files.directory))</code>"
    if let e = r.effect { html += " · \(e.method.rawValue), rank \(e.rank), scale \(Format.general(Double(e.scale))), against <code>\(HTMLText.escape(r.base ?? ""))</code>" }
    html += "</p>"
    if !r.notes.isEmpty { html += "<ul class=\"notes\">" + r.notes.map { "<li>\(HTMLText.escape($0))</li>" }.joined() + "</ul>" }
    guard let effect = r.effect else { return html + "</article>\n" }
    let layers = effect.layers
    func row(_ l: LayerEffect, _ cls: String, _ name: String) -> String {
      "<tr class=\"\(cls)\" data-layer=\"\(l.layer.map(String.init) ?? "")\" data-sparsity-before=\"\(exact(l.sparsityBefore))\" "
        + "data-sparsity-after=\"\(exact(l.sparsityAfter))\" data-relative-change=\"\(exact(l.relativeChange))\">"
        + "<td>\(name)</td><td class=\"num\">\(l.projections)</td><td class=\"num\">\(l.elements)</td>"
        + "<td class=\"num\">\(Format.percent(l.sparsityBefore))</td><td class=\"num\">\(Format.percent(l.sparsityAfter))</td>"
        + "<td class=\"num\">\(number(l.relativeChange, -3))</td><td class=\"num\">\(number(l.weightNorm, -4))</td><td class=\"num\">\(number(l.deltaNorm, -4))</td></tr>"
    }
    html += "<table class=\"layers\" data-rows=\"\(layers.count)\"><thead><tr><th>layer</th><th>projections</th><th>weights</th><th>sparsity before</th>"
      + "<th>sparsity after</th><th>‖W′ − W‖ / ‖W‖</th><th>‖W‖</th><th>‖W′ − W‖</th></tr></thead><tbody>"
      + layers.map { row($0, "layer", $0.layer.map(String.init) ?? "other") }.joined()
      + "</tbody><tfoot>" + row(effect.total, "total", "all") + "</tfoot></table>"
    return html + "</article>\n"
  }

  // MARK: values

  /// `digits` decimals; a negative count means that many significant digits (%g). "not finite" otherwise.
  static func number(_ v: Double, _ digits: Int) -> String {
    guard v.isFinite else { return v.isNaN ? "not finite (NaN)" : (v > 0 ? "+inf" : "-inf") }
    return digits >= 0 ? Format.fixed(v, digits) : String(format: "%.\(-digits)g", v)
  }

  /// The value in full (for data- attributes), empty when not finite.
  static func exact(_ v: Double) -> String { v.isFinite ? String(v) : "" }

  /// A setting's JSON value as text: strings bare, arrays joined, numbers as written.
  static func show(_ value: JSONValue) -> String {
    switch value {
    case .string(let s): return s
    case .number(let n): return n
    case .bool(let b): return b ? "true" : "false"
    case .null: return "—"
    case .array(let a): return a.map(show).joined(separator: ", ")
    case .object: return JSONWriter.compact(value)
    }
  }

  static let style = """
    body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1020px;color:#1b1b1b;line-height:1.4;padding:0 12px}\
    h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:16px}\
    .meta{color:#555}.note{color:#555;font-style:italic}.explain{color:#444;font-size:13px;max-width:900px}\
    ul.notes{color:#8a4b00;font-size:14px}svg.chart{max-width:100%;height:auto;display:block;border:1px solid #e4e4e4}\
    table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}\
    thead th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}tfoot td{font-weight:bold}\
    table.settings tbody th{font-weight:normal;color:#444;background:#fafafa}tr.differs td{background:#fff6e0}\
    .swatch{display:inline-block;width:10px;height:10px;margin-right:5px;border-radius:2px}code{font-size:12px}
    """

  /// Checks that the page drew what it should: every chart has its series and a size, the page has
  /// every chart; any problem is a console error (the browser test fails on one). Marks <body> with
  /// data-rendered="ok" (or "failed") so a DOM dump shows that it ran.
  static let script = """
    (function () {
      var problems = [];
      var charts = document.querySelectorAll("svg.chart");
      if (charts.length !== Number(document.body.getAttribute("data-charts"))) problems.push(charts.length + " charts, expected " + document.body.getAttribute("data-charts"));
      charts.forEach(function (svg) {
        var want = Number(svg.getAttribute("data-series")), got = svg.querySelectorAll(".series").length, box = svg.getBoundingClientRect();
        if (svg.childElementCount === 0) problems.push(svg.id + " is empty");
        if (got !== want) problems.push(svg.id + ": " + got + " series drawn, " + want + " expected");
        if (!(box.width > 0 && box.height > 0)) problems.push(svg.id + " has no size");
      });
      document.querySelectorAll("table[data-rows]").forEach(function (table) {
        var rows = table.tBodies[0].rows.length;
        if (rows !== Number(table.getAttribute("data-rows"))) problems.push("a table has " + rows + " rows, expected " + table.getAttribute("data-rows"));
      });
      problems.forEach(function (p) { console.error("espalier report: " + p); });
      document.body.setAttribute("data-rendered", problems.length ? "failed" : "ok");
    })();
    """
}
