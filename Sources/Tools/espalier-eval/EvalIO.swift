// espalier-eval's inputs (text or JSONL) and its reports.

import Formats
import Surgery
import ToolSupport

enum EvalInputs {
  static func text(_ path: String) throws -> String {
    if path.hasSuffix(".jsonl") {
      return try JSONLines.read(path).compactMap { $0["text"]?.stringValue }.joined(separator: "\n\n")
    }
    let mapped = try MappedFile(path: path)
    return String(decoding: mapped.bytes, as: UTF8.self)
  }

  static func choices(_ path: String) throws -> [ChoiceItem] {
    try JSONLines.read(path).enumerated().map { i, o in
      guard let context = o["context"]?.stringValue, let choices = o["choices"]?.arrayValue?.compactMap(\.stringValue),
        !choices.isEmpty, let label = o["label"]?.intValue, label < choices.count
      else {
        throw FormatError.io(file: path, reason: "line \(i + 1) needs context (string), choices (strings) and label (an index into choices)")
      }
      return ChoiceItem(context: context, choices: choices, label: label)
    }
  }
}

enum EvalSummary {
  static func print(_ r: PerplexityReport, seconds: Double, json: Bool) {
    if json {
      Output.json(.object(JSONObject([
        ("windows", .number(String(r.windows))), ("seq_len", .number(String(r.seqLen))),
        ("tokens", .number(String(r.tokens))), ("text_tokens", .number(String(r.textTokens))),
        ("nll", .number(Format.fixed(r.nll, 6))), ("perplexity", .number(Format.fixed(r.perplexity, 4))),
        ("seconds", .number(Format.fixed(seconds, 2))),
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
      ])))
    } else {
      Output.line("items: \(r.items)  acc: \(Format.fixed(r.accuracy, 4))  acc_norm: \(Format.fixed(r.normalizedAccuracy, 4))  time: \(Format.fixed(seconds, 1)) s")
    }
  }
}
