// espalier-eval: perplexity of a model on a text, or multiple-choice accuracy on a JSONL file.

import ArgumentParser
import Formats
import Surgery
import ToolSupport

#if canImport(Glibc)
  import Glibc
#endif

@main
struct EvalCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "espalier-eval",
    abstract: "Perplexity on a text, or multiple-choice accuracy, of a Llama-family checkpoint on the CPU.",
    discussion: """
      MODEL is a checkpoint directory (config.json, weights, tokenizer.json) or a GGUF file. With --text, \
      the text is tokenized and cut into non-overlapping windows of --seq-len tokens (the remainder after \
      the last full window is dropped; a shorter text is one window); every token after the first of a \
      window is scored, and the report gives windows, scored tokens, mean NLL (nats) and perplexity. With \
      --choices, each JSONL line {"context": ..., "choices": [...], "label": N} is scored by the summed \
      log-likelihood of each choice after its context: acc picks the highest sum, acc_norm the highest sum \
      per UTF-8 byte of the choice (as lm-eval). Memory: the plan is printed first; a model larger than \
      --max-memory is read one block at a time, every window of a sweep passing a block before the next \
      block is read. Exit status: 0 evaluated, 2 unreadable input, 3 the memory plan does not fit, 64 usage.
      """)

  @Argument(help: "A checkpoint directory or a GGUF file.", completion: .file())
  var model: String

  @Option(help: "A text file to compute perplexity on (a .jsonl file: its \"text\" fields, joined by blank lines).")
  var text: String?

  @Option(help: "A JSONL file of {context, choices, label} to score.")
  var choices: String?

  @Option(help: "Tokens per window (never taken from the model's max_position_embeddings).")
  var seqLen = 2048

  @Option(help: "Score at most this many windows (or choice items).")
  var limit: Int?

  @Option(help: "Windows per forward pass.")
  var batchSize = 1

  @OptionGroup var memory: MemoryOptions
  @OptionGroup var reporting: ReportOptions

  func validate() throws {
    guard (text == nil) != (choices == nil) else { throw ValidationError("give exactly one of --text and --choices") }
    guard seqLen >= 2 else { throw ValidationError("--seq-len must be at least 2") }
    guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
    if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
  }

  func run() throws {
    try runReportingErrors {
      let clock = Stopwatch()
      SystemMemory.returnFreedBuffers()
      let cluster = try ClusterLaunch.start()
      let facts = try Planning.facts(model)
      let (budget, source) = memory.budget
      let plan = MemoryPlanner.eval(
        facts, seqLen: text != nil ? seqLen - 1 : 512, batch: batchSize, windows: limit ?? 64, budget: budget, budgetSource: source)
      guard try Planning.announce(plan, memory, json: reporting.json) else { return }
      let tokenizer = try Tokenizer.forCheckpoint(model)
      let llama = try LlamaModel.load(model, maxPositions: text != nil ? seqLen : 4096, residency: plan.residency)
      var options = EvaluationOptions()
      options.cluster = cluster
      (options.batchSize, options.sweepSequences, options.maxMemory) = (plan.batchSize, plan.sweepSequences, plan.hiddenBudget)
      try cluster.agree(&options.batchSize)
      if let tmp = getenv("TMPDIR") { options.temporaryDirectory = String(cString: tmp) }
      let progress = Progress("eval", total: 0)
      if let text {
        let tokens = tokenizer.encode(try Corpus.text(text))
        let report = try Evaluate.perplexity(model: llama, tokens: tokens, seqLen: seqLen, limit: limit, batchSize: options.batchSize, options: options) {
          done, total in progress.update(done, of: total)
        }
        EvalSummary.print(report, seconds: clock.seconds, json: reporting.json)
      } else if let choices {
        var items = try Corpus.choices(choices)
        if let limit { items = Array(items.prefix(limit)) }
        let report = try Evaluate.multipleChoice(model: llama, tokenizer: tokenizer, items: items, options: options) { done, total in
          progress.update(done, of: total)
        }
        EvalSummary.print(report, seconds: clock.seconds, json: reporting.json)
      }
    }
  }
}
