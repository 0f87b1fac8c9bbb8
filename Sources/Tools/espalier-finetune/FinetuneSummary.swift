// How espalier-finetune reports a finished run.

import Formats
import Surgery
import ToolSupport

enum FinetuneSummary {
  static func print(_ r: FinetuneReport, output: String, seconds: Double, json: Bool) {
    if json {
      Output.json(.object(JSONObject([
        ("output", .string(output)), ("method", .string(r.settings.method.rawValue)), ("steps", .number(String(r.steps))),
        ("final_loss", r.last.map { .number(String($0.loss)) } ?? .null),
        ("tokens_per_s", .number(Format.fixed(r.tokensPerSecond, 1))), ("seconds", .number(Format.fixed(seconds, 2))),
        ("base_fingerprint", .string(r.settings.baseFingerprint)),
        ("losa", r.losa.isEmpty ? .null : .array(r.losa.map(\.json))),
        ("settings", r.settings.json), ("mpi", ClusterLaunch.json),
      ])))
    } else {
      Output.line("trained \(r.settings.method.rawValue) adapters for \(r.steps) steps -> \(output)")
      for i in r.losa {
        Output.line(
          "  round \(i.iteration): sparsity \(Format.fixed(i.sparsity, 4)) (target \(Format.fixed(i.target, 4))), rates \(Format.fixed(i.rates.min() ?? 0, 3))-\(Format.fixed(i.rates.max() ?? 0, 3)), "
            + "ranks \(i.ranks.min() ?? 0)-\(i.ranks.max() ?? 0) (mean \(i.meanRank)), final loss \(i.finalLoss.map { Format.fixed($0, 4) } ?? "-")")
      }
      if !r.losa.isEmpty { Output.line("pruned base: \(output)/base (merge with: espalier merge \(output)/base \(output) MERGED)") }
      if let last = r.last {
        Output.line("final loss: \(Format.fixed(last.loss, 4))  throughput: \(Int(r.tokensPerSecond)) tokens/s  time: \(Format.fixed(seconds, 1)) s")
      }
    }
  }
}
