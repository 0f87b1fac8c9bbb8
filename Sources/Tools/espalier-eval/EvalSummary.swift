// espalier-eval's reports: a summary line for people, JSON for pipelines.

import Formats
import Surgery
import ToolSupport

enum EvalSummary {
  static func print(_ r: PerplexityReport, seconds: Double, json: Bool) {
    if json {
      Output.json(.object(JSONObject([
        ("windows", .number(String(r.windows))), ("seq_len", .number(String(r.seqLen))),
        ("tokens", .number(String(r.tokens))), ("text_tokens", .number(String(r.textTokens))),
        ("nll", .number(Format.fixed(r.nll, 6))), ("perplexity", .number(Format.fixed(r.perplexity, 4))),
        ("nll_exact", .number(String(r.nll))), ("seconds", .number(Format.fixed(seconds, 2))), ("mpi", ClusterLaunch.json),
      ])))
    } else {
      Output.line("windows: \(r.windows) × \(r.seqLen) tokens  scored tokens: \(r.tokens) (of \(r.textTokens) in the text)")
      Output.line("nll: \(Format.fixed(r.nll, 4))  perplexity: \(Format.fixed(r.perplexity, 3))  time: \(Format.fixed(seconds, 1)) s")
    }
  }

  static func print(_ r: ChoiceReport, seconds: Double, json: Bool) {
    if json {
      Output.json(.object(JSONObject([
        ("items", .number(String(r.items))), ("acc", .number(Format.fixed(r.accuracy, 6))),
        ("acc_norm", .number(Format.fixed(r.normalizedAccuracy, 6))), ("seconds", .number(Format.fixed(seconds, 2))),
        ("mpi", ClusterLaunch.json),
      ])))
    } else {
      Output.line("items: \(r.items)  acc: \(Format.fixed(r.accuracy, 4))  acc_norm: \(Format.fixed(r.normalizedAccuracy, 4))  time: \(Format.fixed(seconds, 1)) s")
    }
  }
}
