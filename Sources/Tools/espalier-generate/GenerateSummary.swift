// espalier-generate's output: the text as it is produced, and the report (stderr, or JSON on stdout).

import Formats
import Surgery
import ToolSupport

/// Turns tokens into text as they come. Byte-level BPE may split a character across tokens, so text is
/// released only up to the last complete character; stop tokens are not shown.
struct TextStreamer {
  let tokenizer: Tokenizer
  let stopTokens: Set<Int32>
  private(set) var shown: [Int32] = []
  private var released = 0

  init(tokenizer: Tokenizer, stopTokens: Set<Int32>) {
    self.tokenizer = tokenizer
    self.stopTokens = stopTokens
  }

  /// The whole text of the tokens shown so far.
  var text: String { tokenizer.decode(shown) }

  /// The text that `token` completes (often empty, or several characters).
  mutating func append(_ token: Int32) -> String {
    guard !stopTokens.contains(token) else { return "" }
    shown.append(token)
    let scalars = text.unicodeScalars
    // An incomplete UTF-8 sequence at the end decodes as U+FFFD until its last byte arrives.
    guard scalars.last != "\u{FFFD}" else { return "" }
    return release(scalars)
  }

  /// Whatever is left, replacement characters included.
  mutating func finish() -> String { release(text.unicodeScalars) }

  private mutating func release(_ scalars: String.UnicodeScalarView) -> String {
    guard scalars.count > released else { return "" }
    var out = String.UnicodeScalarView()
    out.append(contentsOf: scalars.dropFirst(released))
    released = scalars.count
    return String(out)
  }
}

enum GenerateSummary {
  static func report(
    _ r: GenerationResult, prompt: [Int32], text: String, options: GenerationOptions, residency: LlamaModel.Residency, json: Bool
  ) {
    let stop = r.stop == .maxTokens ? "max_tokens" : "eos"
    // The first token comes from the prompt's forward; the rest from one decoding step each.
    let steps = max(0, r.tokens.count - 1)
    let rate = r.decodeSeconds > 0 ? Double(steps) / r.decodeSeconds : 0
    if json {
      let s = options.sampling
      Output.json(.object(JSONObject([
        ("prompt_ids", .array(prompt.map { .number(String($0)) })),
        ("generated_ids", .array(r.tokens.map { .number(String($0)) })),
        ("text", .string(text)),
        ("stop", .string(stop)),
        ("max_tokens", .number(String(options.maxTokens))),
        ("sampling", .object(JSONObject([
          ("temperature", .number(Format.general(Double(s.temperature)))), ("top_p", .number(Format.general(Double(s.topP)))),
          ("top_k", .number(String(s.topK))), ("seed", .number(String(s.seed))),
        ]))),
        ("residency", .string(residency.rawValue)),
        ("prompt_seconds", .number(Format.fixed(r.promptSeconds, 3))),
        ("decode_seconds", .number(Format.fixed(r.decodeSeconds, 3))),
        ("tokens_per_s", .number(Format.fixed(rate, 2))),
      ])))
    } else {
      Log.info(
        "prompt: \(r.promptTokens) tokens in \(Format.fixed(r.promptSeconds, 2)) s; generated \(r.tokens.count) tokens "
          + "(\(Format.fixed(rate, 1)) tokens/s after the first); stopped: "
          + (stop == "eos" ? "end-of-sequence token" : "--max-tokens"))
    }
  }
}
