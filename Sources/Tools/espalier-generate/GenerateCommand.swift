// espalier-generate: continues a prompt with a checkpoint, greedy or sampled, streaming the text.

import ArgumentParser
import Formats
import Surgery
import ToolSupport

@main
struct GenerateCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "espalier-generate",
    abstract: "Continue a prompt with a Llama-family checkpoint on the CPU (KV cache; greedy or sampled).",
    discussion: """
      MODEL is anything the other tools read: a checkpoint directory (safetensors, sharded or not, HDF5, or \
      a compressed sparse checkpoint) or a GGUF file. The prompt is encoded as given (no chat template: \
      write the template's text into the prompt), after the BOS token when the tokenizer asks for one \
      (tokenizer.json's post-processor or tokenizer_config.json's add_bos_token; see --bos). New tokens \
      are streamed to stdout as text as they are chosen; generation stops after an end-of-sequence token \
      (config.json's and generation_config.json's eos_token_id; not printed) or after --max-tokens. \
      Timing goes to stderr. With --json nothing is streamed: one JSON object with the prompt and \
      generated token ids, the text, why it stopped and the timing. Temperature 0 is greedy (the same \
      tokens as transformers' generate with do_sample=False); above 0 the logits are divided by the \
      temperature, filtered by --top-k and then --top-p, and sampled with --seed (transformers' order). \
      Memory: the plan (weights, KV cache) is printed first; a model larger than --max-memory is read one \
      block at a time for every token (slow, but it runs). Exit status: 0 generated, 2 unreadable input, \
      3 the memory plan does not fit, 64 usage.
      """)

  @Argument(help: "A checkpoint directory or a GGUF file.", completion: .file())
  var model: String

  @Option(help: "The prompt text.")
  var prompt: String?

  @Option(help: "A file whose whole content is the prompt.", completion: .file())
  var promptFile: String?

  @Option(help: "Tokens to generate at most.")
  var maxTokens = 128

  @Option(help: "Sampling temperature; 0 is greedy.")
  var temperature: Float = 0

  @Option(help: "Nucleus sampling: keep the most probable tokens whose probability reaches this (1: all).")
  var topP: Float = 1

  @Option(help: "Keep only the this many most probable tokens before --top-p (0: all).")
  var topK = 0

  @Option(help: "Seed of the sampler (sampling only).")
  var seed: UInt64 = 0

  @Flag(help: "Keep generating after an end-of-sequence token, up to --max-tokens.")
  var ignoreEOS = false

  enum BOS: String, ExpressibleByArgument, CaseIterable {
    case auto, yes, no
  }

  @Option(help: "Put the BOS token before the prompt: auto (as the tokenizer's files say), yes, no.")
  var bos = BOS.auto

  @OptionGroup var memory: MemoryOptions
  @OptionGroup var reporting: ReportOptions

  func validate() throws {
    guard (prompt == nil) != (promptFile == nil) else { throw ValidationError("give exactly one of --prompt and --prompt-file") }
    guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1") }
    guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be 0 (greedy) or positive") }
    guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
    guard topK >= 0 else { throw ValidationError("--top-k must be 0 (off) or positive") }
  }

  func run() throws {
    try runReportingErrors {
      try ClusterLaunch.refuseSeveralRanks("espalier generate")
      SystemMemory.returnFreedBuffers()
      let facts = try Planning.facts(model)
      let tokenizer = try Tokenizer.forCheckpoint(model)
      let text = try prompt ?? GenerateCommand.read(promptFile!)
      let bosTokens: [Int32]
      switch bos {
      case .auto: bosTokens = tokenizer.promptPrefix
      case .no: bosTokens = []
      case .yes:
        guard let id = facts.config.bosTokenID ?? tokenizer.promptPrefix.first.map(Int.init) else {
          throw ValidationError("--bos yes: the model names no BOS token (bos_token_id)")
        }
        bosTokens = [Int32(id)]
      }
      let promptIDs = bosTokens + tokenizer.encode(text)
      guard !promptIDs.isEmpty else { throw ValidationError("the prompt is empty: there is nothing to continue") }
      let capacity = promptIDs.count + maxTokens - 1
      guard capacity <= facts.config.maxPositionEmbeddings else {
        throw ValidationError(
          "the prompt (\(promptIDs.count) tokens) and --max-tokens \(maxTokens) need \(capacity) positions; the model has \(facts.config.maxPositionEmbeddings) (max_position_embeddings)")
      }
      let (budget, source) = memory.budget
      let plan = MemoryPlanner.generate(facts, capacity: capacity, chunk: GenerateCommand.promptChunk, budget: budget, budgetSource: source)
      guard try Planning.announce(plan, memory, json: reporting.json) else { return }
      let llama = try LlamaModel.load(model, maxPositions: capacity, residency: plan.residency)
      let decoder = try Decoder(model: llama, capacity: capacity, chunk: GenerateCommand.promptChunk)

      var options = GenerationOptions()
      options.maxTokens = maxTokens
      (options.sampling.temperature, options.sampling.topP, options.sampling.topK, options.sampling.seed) = (temperature, topP, topK, seed)
      if !ignoreEOS { options.stopTokens = Set(try GenerationConfig.eosTokenIDs(model, config: llama.config).map(Int32.init)) }

      var streamer = TextStreamer(tokenizer: tokenizer, stopTokens: options.stopTokens)
      let json = reporting.json
      let result = try Generate.run(decoder, prompt: promptIDs, options: options) { token in
        let text = streamer.append(token)
        if !json { Output.stream(text) }
      }
      if !json { Output.stream(streamer.finish() + "\n") }
      GenerateSummary.report(
        result, prompt: promptIDs, text: streamer.text, options: options, residency: plan.residency, json: json)
    }
  }

  /// The whole of a prompt file, as UTF-8.
  static func read(_ path: String) throws -> String {
    guard FileSystem.exists(path), !FileSystem.isDirectory(path) else { throw FormatError.io(file: path, reason: "no such prompt file") }
    return String(decoding: try FileSystem.bytes(path, offset: 0, count: FileSystem.size(path)), as: UTF8.self)
  }

  /// Prompt tokens per forward: long prompts are fed in chunks of this many.
  static let promptChunk = 128
}
