// What espalier-report prints on stdout: a line per run and the output path, or (--json) everything the
// page shows as numbers: per run its method, steps, final loss, base and per-layer figures; the
// perplexity rows; the output path.

import Formats
import Surgery
import ToolSupport

enum ReportSummary {
  static func print(output: String, runs: [RunReport], evals: [EvalRow], seconds: Double, json: Bool) {
    guard json else {
      for r in runs {
        let loss = r.finalLoss.map { ReportHTML.number($0, 4) } ?? "—"
        let layers = r.effect.map { e in
          "\(e.layers.count) layers, sparsity \(Format.percent(e.total.sparsityBefore)) -> \(Format.percent(e.total.sparsityAfter)), change \(ReportHTML.number(e.total.relativeChange, -3))"
        } ?? "no adapter"
        Output.line("\(r.label): \(r.files.method ?? "?"), \(r.files.log?.entries.count ?? 0) steps, final loss \(loss); \(layers)")
      }
      Output.line("wrote \(output) (\(runs.count) run\(runs.count == 1 ? "" : "s"), \(evals.count) perplexity report\(evals.count == 1 ? "" : "s"), \(Format.fixed(seconds, 1)) s)")
      return
    }
    func layer(_ l: LayerEffect) -> JSONValue {
      .object(JSONObject([
        ("layer", l.layer.map(int) ?? .null), ("projections", int(l.projections)), ("elements", int(l.elements)),
        ("zeros_before", int(l.zerosBefore)), ("zeros_after", int(l.zerosAfter)),
        ("sparsity_before", number(l.sparsityBefore)), ("sparsity_after", number(l.sparsityAfter)),
        ("weight_norm", number(l.weightNorm)), ("delta_norm", number(l.deltaNorm)), ("relative_change", number(l.relativeChange)),
      ]))
    }
    let runValues = runs.map { r -> JSONValue in
      .object(JSONObject([
        ("label", .string(r.label)), ("directory", .string(r.files.directory)), ("method", r.files.method.map { .string($0) } ?? .null),
        ("steps_logged", r.files.log.map { int($0.entries.count) } ?? .null), ("final_loss", r.finalLoss.map(number) ?? .null),
        ("non_finite_steps", .array((r.files.log?.entries ?? []).filter { !$0.loss.isFinite }.map { int($0.step) })),
        ("base", r.base.map { .string($0) } ?? .null),
        ("rank", r.effect.map { int($0.rank) } ?? .null), ("scale", r.effect.map { number(Double($0.scale)) } ?? .null),
        ("layers", .array((r.effect?.layers ?? []).map(layer))), ("total", r.effect.map { layer($0.total) } ?? .null),
        ("notes", .array(r.notes.map { .string($0) })),
      ]))
    }
    let evalValues = evals.map { e -> JSONValue in
      .object(JSONObject([
        ("label", .string(e.label)), ("file", .string(e.file)), ("perplexity", number(e.record.perplexity)), ("nll", number(e.record.nll)),
        ("windows", e.record.windows.map(int) ?? .null), ("seq_len", e.record.seqLen.map(int) ?? .null), ("tokens", e.record.tokens.map(int) ?? .null),
      ]))
    }
    Output.json(.object(JSONObject([
      ("output", .string(output)), ("runs", .array(runValues)), ("evals", .array(evalValues)), ("seconds", .number(Format.fixed(seconds, 2))),
    ])))
  }

  static func int(_ n: Int) -> JSONValue { .number(String(n)) }
  /// Full precision; null when not finite (JSON has no NaN).
  static func number(_ v: Double) -> JSONValue { v.isFinite ? .number(String(v)) : .null }
}
