// Inline SVG charts for espalier report: a line chart (several series, gaps where a value is not finite)
// and a grouped bar chart (one group per category, one bar per series), each with axes, "nice" ticks
// (1, 2 or 5 times a power of ten), light grid lines, a legend and a <title> tooltip on every mark. No
// script, no fonts, no external reference: the page's inline script only checks that every chart drew its
// series (each series is one element of class "series"; the chart's data-series says how many to expect).

import Foundation
import ToolSupport

enum SVGChart {
  /// Okabe and Ito's colour-blind-safe palette (without its yellow, too pale on white), then a brown.
  static let palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C510A", "#000000"]
  static func color(_ index: Int) -> String { palette[index % palette.count] }

  struct Series {
    var label: String
    var color: String
    /// (x, y); a non-finite y breaks the line.
    var points: [(x: Double, y: Double)]
  }

  struct BarSeries {
    var label: String
    var color: String
    /// Fill opacity (a lighter bar for "before").
    var opacity = 1.0
    /// One value per category; a non-finite one draws no bar.
    var values: [Double]
  }

  /// Axis values are shown by `format(value, decimals)`, decimals being what the tick step needs.
  typealias Formatter = @Sendable (Double, Int) -> String
  static let plain: Formatter = { Format.fixed($0, $1) }
  static let percent: Formatter = { Format.fixed($0 * 100, max(0, $1 - 2)) + "%" }

  // Geometry: the plot area inside the margins, the legend to its right.
  static let (width, height) = (980.0, 380.0)
  static let (left, right, top, bottom) = (72.0, 230.0, 40.0, 56.0)
  static var plotWidth: Double { width - left - right }
  static var plotHeight: Double { height - top - bottom }

  static func line(id: String, title: String, xLabel: String, yLabel: String, series: [Series], integerX: Bool, format: Formatter = plain) -> String {
    let finite = series.flatMap { $0.points.filter { $0.y.isFinite && $0.x.isFinite } }
    let drawn = series.filter { $0.points.contains { $0.y.isFinite && $0.x.isFinite } }
    var svg = open(id: id, title: title, series: drawn.count)
    guard let xs = finite.map(\.x).min().map({ ($0, finite.map(\.x).max()!) }), let ys = finite.map(\.y).min().map({ ($0, finite.map(\.y).max()!) })
    else {
      svg += text(left + plotWidth / 2, top + plotHeight / 2, "nothing to draw: no finite value", anchor: "middle", cls: "empty")
      return svg + legend(series.map { ($0.label + " (no finite value)", $0.color, 1.0, false) }) + "</svg>"
    }
    let xTicks = ticks(xs.0, xs.1, integer: integerX)
    let yTicks = ticks(ys.0, ys.1, integer: false)
    let x = scale(xTicks.values.first!, xTicks.values.last!, left, left + plotWidth)
    let y = scale(yTicks.values.first!, yTicks.values.last!, top + plotHeight, top)
    svg += axes(xTicks: xTicks.values.map { (x($0), Format.fixed($0, xTicks.decimals)) }, yTicks: yTicks.values.map { (y($0), format($0, yTicks.decimals)) }, xLabel: xLabel, yLabel: yLabel)
    for s in drawn {
      var d = "", pen = false
      let points = s.points.filter(\.x.isFinite)
      for p in points {
        guard p.y.isFinite else { pen = false; continue }
        d += (pen ? " L" : (d.isEmpty ? "M" : " M")) + coordinate(x(p.x)) + " " + coordinate(y(p.y))
        pen = true
      }
      svg += "<g class=\"run\"><path class=\"series\" data-series=\"\(HTMLText.escape(s.label))\" d=\"\(d)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\" stroke-linejoin=\"round\"><title>\(HTMLText.escape(s.label))</title></path>"
      let marked = points.filter(\.y.isFinite)
      if marked.count <= 60 {
        for p in marked {
          svg += "<circle cx=\"\(coordinate(x(p.x)))\" cy=\"\(coordinate(y(p.y)))\" r=\"2.6\" fill=\"\(s.color)\"><title>\(HTMLText.escape(s.label)): \(Format.fixed(p.x, integerX ? 0 : 3)), \(format(p.y, yTicks.decimals + 2))</title></circle>"
        }
      }
      svg += "</g>"
    }
    let entries = series.map { s in (s.label + (drawn.contains { $0.label == s.label } ? "" : " (no finite value)"), s.color, 1.0, false) }
    return svg + legend(entries) + "</svg>"
  }

  /// `yRange` fixes the value axis (e.g. 0...1 for a fraction); by default it runs from 0 to the largest value.
  static func bars(
    id: String, title: String, xLabel: String, yLabel: String, categories: [String], series: [BarSeries], yRange: ClosedRange<Double>? = nil,
    format: Formatter = plain
  ) -> String {
    var svg = open(id: id, title: title, series: series.count)
    let largest = series.flatMap { $0.values.filter(\.isFinite) }.max() ?? 0
    let yTicks = ticks(yRange?.lowerBound ?? 0, yRange?.upperBound ?? (largest > 0 ? largest : 1), integer: false)
    let y = scale(yTicks.values.first!, yTicks.values.last!, top + plotHeight, top)
    let group = plotWidth / Double(max(1, categories.count))
    let bar = min(group * 0.8 / Double(max(1, series.count)), 48)
    let inset = (group - bar * Double(series.count)) / 2
    let labelEvery = max(1, Int((Double(categories.count) * 28 / plotWidth).rounded(.up)))
    let xTicks = categories.enumerated().compactMap { i, c in i % labelEvery == 0 ? (left + group * (Double(i) + 0.5), c) : nil }
    svg += axes(xTicks: xTicks, yTicks: yTicks.values.map { (y($0), format($0, yTicks.decimals)) }, xLabel: xLabel, yLabel: yLabel)
    for (j, s) in series.enumerated() {
      svg += "<g class=\"series\" data-series=\"\(HTMLText.escape(s.label))\" fill=\"\(s.color)\" fill-opacity=\"\(s.opacity)\" stroke=\"\(s.color)\" stroke-width=\"0.8\">"
      for (i, value) in s.values.enumerated() where value.isFinite && i < categories.count {
        let x0 = left + group * Double(i) + inset + bar * Double(j)
        let (yv, y0) = (y(min(max(value, yTicks.values.first!), yTicks.values.last!)), y(max(0, yTicks.values.first!)))
        // A bar at zero keeps a one-pixel sliver, so a value of 0 (LoRA's sparsity after) reads as drawn, not missing.
        let h = max(abs(y0 - yv), 1)
        svg += "<rect x=\"\(coordinate(x0))\" y=\"\(coordinate(min(yv, y0 - h)))\" width=\"\(coordinate(max(bar - 0.6, 0.6)))\" height=\"\(coordinate(h))\">"
          + "<title>\(HTMLText.escape("\(xLabel) \(categories[i]) · \(s.label): \(format(value, yTicks.decimals + 2))"))</title></rect>"
      }
      svg += "</g>"
    }
    return svg + legend(series.map { ($0.label, $0.color, $0.opacity, true) }) + "</svg>"
  }

  // MARK: pieces

  static func open(id: String, title: String, series: Int) -> String {
    "<svg class=\"chart\" id=\"\(HTMLText.escape(id))\" data-series=\"\(series)\" role=\"img\" aria-label=\"\(HTMLText.escape(title))\" "
      + "viewBox=\"0 0 \(Int(width)) \(Int(height))\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">"
      + "<title>\(HTMLText.escape(title))</title>"
      + "<rect x=\"0\" y=\"0\" width=\"\(Int(width))\" height=\"\(Int(height))\" fill=\"#ffffff\"/>"
      + text(left, 22, title, cls: "chart-title", extra: " font-size=\"15\" font-weight=\"bold\"")
  }

  /// Grid lines, the two axes, their tick labels and titles.
  static func axes(xTicks: [(Double, String)], yTicks: [(Double, String)], xLabel: String, yLabel: String) -> String {
    var svg = "<g class=\"axes\" stroke=\"#d0d0d0\" stroke-width=\"1\">"
    for (py, _) in yTicks { svg += "<line x1=\"\(coordinate(left))\" x2=\"\(coordinate(left + plotWidth))\" y1=\"\(coordinate(py))\" y2=\"\(coordinate(py))\"/>" }
    svg += "<line x1=\"\(coordinate(left))\" x2=\"\(coordinate(left))\" y1=\"\(coordinate(top))\" y2=\"\(coordinate(top + plotHeight))\" stroke=\"#333\"/>"
    svg += "<line x1=\"\(coordinate(left))\" x2=\"\(coordinate(left + plotWidth))\" y1=\"\(coordinate(top + plotHeight))\" y2=\"\(coordinate(top + plotHeight))\" stroke=\"#333\"/>"
    for (px, _) in xTicks { svg += "<line x1=\"\(coordinate(px))\" x2=\"\(coordinate(px))\" y1=\"\(coordinate(top + plotHeight))\" y2=\"\(coordinate(top + plotHeight + 5))\" stroke=\"#333\"/>" }
    svg += "</g><g class=\"tick-labels\" fill=\"#333\">"
    for (py, label) in yTicks { svg += text(left - 8, py + 4, label, anchor: "end") }
    for (px, label) in xTicks { svg += text(px, top + plotHeight + 19, label, anchor: "middle") }
    svg += "</g>"
    svg += text(left + plotWidth / 2, height - 12, xLabel, anchor: "middle", cls: "axis-title")
    svg += "<text class=\"axis-title\" transform=\"translate(16 \(coordinate(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(HTMLText.escape(yLabel))</text>"
    return svg
  }

  /// One row per entry right of the plot: a line (or a filled square for bars) and the label, cut to fit
  /// (the whole label in its tooltip).
  static func legend(_ entries: [(label: String, color: String, opacity: Double, filled: Bool)]) -> String {
    var svg = "<g class=\"legend\">"
    let x = left + plotWidth + 18
    for (i, e) in entries.enumerated() {
      let y = top + 8 + Double(i) * 20
      guard y < height - 10 else {
        svg += text(x, y, "… \(entries.count - i) more", cls: "legend-more")
        break
      }
      let shown = e.label.count > 30 ? String(e.label.prefix(29)) + "…" : e.label
      svg += "<g class=\"legend-entry\"><title>\(HTMLText.escape(e.label))</title>"
      svg += e.filled
        ? "<rect x=\"\(coordinate(x))\" y=\"\(coordinate(y - 9))\" width=\"18\" height=\"11\" fill=\"\(e.color)\" fill-opacity=\"\(e.opacity)\" stroke=\"\(e.color)\"/>"
        : "<line x1=\"\(coordinate(x))\" x2=\"\(coordinate(x + 18))\" y1=\"\(coordinate(y - 4))\" y2=\"\(coordinate(y - 4))\" stroke=\"\(e.color)\" stroke-width=\"3\"/>"
      svg += text(x + 24, y, shown) + "</g>"
    }
    return svg + "</g>"
  }

  static func text(_ x: Double, _ y: Double, _ content: String, anchor: String = "start", cls: String? = nil, extra: String = "") -> String {
    "<text x=\"\(coordinate(x))\" y=\"\(coordinate(y))\"" + (anchor == "start" ? "" : " text-anchor=\"\(anchor)\"")
      + (cls.map { " class=\"\($0)\"" } ?? "") + extra + ">\(HTMLText.escape(content))</text>"
  }

  static func coordinate(_ v: Double) -> String { Format.fixed(v, 1) }

  /// A linear map from [d0, d1] onto [r0, r1] (the middle of the range for an empty domain).
  static func scale(_ d0: Double, _ d1: Double, _ r0: Double, _ r1: Double) -> (Double) -> Double {
    let span = d1 - d0
    return { v in span > 0 ? r0 + (v - d0) / span * (r1 - r0) : (r0 + r1) / 2 }
  }

  /// About six ticks covering [lo, hi], at a step of 1, 2 or 5 times a power of ten (at least 1 when
  /// `integer`), and the decimals that step needs. An empty range is widened around its value.
  static func ticks(_ lo: Double, _ hi: Double, integer: Bool) -> (values: [Double], decimals: Int) {
    var (lo, hi) = (lo, hi)
    if !(hi > lo) {
      let pad = integer ? 1 : max(abs(lo) * 0.1, 0.5)
      (lo, hi) = (lo - pad, hi + pad)
    }
    let raw = (hi - lo) / 5
    let magnitude = pow(10, floor(log10(raw)))
    let fraction = raw / magnitude
    var step = (fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10) * magnitude
    if integer { step = max(1, step.rounded()) }
    let first = floor(lo / step + 1e-9) * step, last = ceil(hi / step - 1e-9) * step
    let count = Int(((last - first) / step).rounded())
    let values = (0...max(1, count)).map { first + Double($0) * step }
    return (values, max(0, Int(-floor(log10(step) + 1e-9))))
  }
}
