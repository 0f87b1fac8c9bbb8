// espalier-finetune: LoRS (default), LoRA, SQFT or SPP adapters trained on a (sparse) Llama checkpoint,
// with checkpoints that resume to the same result, a JSONL step log, and PEFT-format output.

import ArgumentParser
import Foundation
import Formats
import Surgery
import ToolSupport

@main
struct FinetuneCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "espalier-finetune",
    abstract: "Train sparsity-preserving adapters (LoRS, or the LoRA/SQFT/SPP baselines) on a Llama-family checkpoint.",
    discussion: """
      MODEL is a checkpoint directory or a GGUF file, usually pruned; its zeros are the mask M = (W != 0) that \
      lors, sqft and spp keep (lora is dense, for comparison). --data is plain text, a directory of text \
      files, JSONL with a "text" field, or Alpaca JSON/JSONL (instruction, input, output; the Alpaca prompt \
      template, loss on the response only, EOS appended). Text is packed into windows of --seq-len tokens.

      OUT receives checkpoints/step-N/ every --save-every steps (adapters, AdamW state, data position), \
      train_log.jsonl (one JSON line per step), and at the end adapter_model.safetensors + \
      adapter_config.json (PEFT format) and espalier.json (method, scale rule, mask source and a \
      fingerprint of the base weights, which merge checks). --resume continues from the newest checkpoint \
      with the same settings and ends where an uninterrupted run would. A LoRS, SQFT or SPP adapter must be \
      merged under the mask (espalier merge), not loaded as a plain LoRA: PEFT would apply it densely.

      Progress goes to stderr, the summary (or --json report) to stdout. Exit status: 0 trained, 1 training \
      stopped (non-finite loss or gradient; the last checkpoint is kept), 2 unreadable input, 64 usage.
      """)

  @Argument(help: "The base checkpoint (directory or GGUF file).", completion: .file()) var model: String
  @Option(help: "Training data: text file, directory of text files, JSONL (\"text\" or Alpaca fields) or Alpaca JSON.") var data: String
  @Option(help: "Output directory for checkpoints, the step log and the adapter.") var output: String
  @Option(help: "Adapter method: lors, lora, sqft or spp.") var method = "lors"
  @Option(help: "Adapter rank r (ignored by spp, whose A has 16 row blocks).") var rank = 16
  @Option(help: "LoRA alpha; the scale is alpha/sqrt(r) or alpha/r by --scale-rule.") var alpha = 16.0
  @Option(help: "rslora (s = alpha/sqrt(r)) or lora (s = alpha/r); default: rslora for lors, lora for the baselines.") var scaleRule: String?
  @Option(help: "LoRS adapter gradient: reordered (the paper's cheap form) or exact (the masked gradient).") var gradient = "reordered"
  @Option(help: "Dropout on the adapter branch's input (lora and sqft; lors and spp merge before the product and take none).") var dropout = 0.0
  @Option(help: "Projections to adapt, comma-separated short names.") var targets = ProjectionNames.all.joined(separator: ",")
  @Option(name: .customLong("init"), help: "Initialisation: gradient (SVD of the averaged gradient, LoRS) or random (kaiming input side, zero output side); default: gradient for lors, random otherwise.") var initialization: String?
  @Option(help: "Windows whose gradient is averaged for --init gradient.") var initSamples = 128
  @Option(help: "Memory for the dense gradients of --init gradient (decimal units); more layers take more passes.") var maxMemory = "2GB"
  @Option(help: "Peak learning rate.") var lr = 2e-5
  @Option(help: "Floor of the cosine schedule.") var minLr = 1e-6
  @Option(help: "Linear warmup steps.") var warmup = 0
  @Option(help: "AdamW decoupled weight decay.") var weightDecay = 0.0
  @Option(help: "Clip the global gradient norm to this (0 = off).") var maxGradNorm = 1.0
  @Option(help: "Windows per micro-batch.") var batchSize = 4
  @Option(help: "Micro-batches per optimizer step.") var gradAccum = 4
  @Option(help: "Tokens per window (capped at the model's context).") var seqLen = 512
  @Option(help: "Optimizer steps (default: from --epochs).") var steps: Int?
  @Option(help: "Passes over the data when --steps is not given.") var epochs = 3.0
  @Option(help: "Seed of the data order and of --init random.") var seed: UInt64 = 0
  @Option(help: "Write a checkpoint every N steps (0 = only at the end).") var saveEvery = 100
  @Flag(help: "Continue from the newest checkpoint in OUT.") var resume = false
  @Flag(help: "Start afresh even if OUT exists (its checkpoints and log are replaced).") var overwrite = false
  @Flag(help: "Print a JSON report on stdout instead of the summary.") var json = false

  func validate() throws {
    guard let method = AdapterMethod(rawValue: method) else { throw ValidationError("--method must be lors, lora, sqft or spp") }
    if let scaleRule, ScaleRule(rawValue: scaleRule) == nil { throw ValidationError("--scale-rule must be rslora or lora") }
    guard LoRSGradient(rawValue: gradient) != nil else { throw ValidationError("--gradient must be reordered or exact") }
    if let initialization {
      guard ["gradient", "random"].contains(initialization) else { throw ValidationError("--init must be gradient or random") }
      if initialization == "gradient" && method == .spp { throw ValidationError("--init gradient needs a low-rank method; spp starts from b = 0") }
    }
    let names = targets.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
    for name in names where !ProjectionNames.all.contains(name) {
      throw ValidationError("--targets: unknown projection `\(name)` (choose from \(ProjectionNames.all.joined(separator: ", ")))")
    }
    guard !names.isEmpty else { throw ValidationError("--targets is empty") }
    guard dropout >= 0 && dropout < 1 else { throw ValidationError("--dropout must be in [0, 1)") }
    if dropout > 0 && !(method == .lora || method == .sqft) {
      throw ValidationError("--dropout applies to lora and sqft: \(method.rawValue) merges its adapter into the weight, leaving no branch to drop")
    }
    guard rank >= 1, alpha > 0 else { throw ValidationError("--rank must be >= 1 and --alpha > 0") }
    guard lr > 0, minLr >= 0, minLr <= lr, warmup >= 0 else { throw ValidationError("need --lr > 0 and 0 <= --min-lr <= --lr, --warmup >= 0") }
    guard weightDecay >= 0, maxGradNorm >= 0 else { throw ValidationError("--weight-decay and --max-grad-norm must be >= 0") }
    guard batchSize >= 1, gradAccum >= 1, seqLen >= 2, initSamples >= 1, saveEvery >= 0 else {
      throw ValidationError("--batch-size, --grad-accum, --init-samples must be >= 1, --seq-len >= 2, --save-every >= 0")
    }
    if let steps, steps < 1 { throw ValidationError("--steps must be >= 1") }
    guard epochs > 0 else { throw ValidationError("--epochs must be > 0") }
    guard !(resume && overwrite) else { throw ValidationError("--resume and --overwrite exclude each other") }
    do { _ = try ByteSize.parse(maxMemory) } catch { throw ValidationError("--max-memory: \(error)") }
    let exists = FileManager.default.fileExists(atPath: output)
    if exists && !resume && !overwrite { throw ValidationError("\(output) exists; pass --resume to continue it or --overwrite to start afresh") }
    if resume && !exists { throw ValidationError("--resume: \(output) does not exist") }
  }

  func run() throws {
    do {
      try runReportingErrors { try train() }
    }
  }

  func train() throws {
    let clock = Stopwatch()
    let method = AdapterMethod(rawValue: method)!
    let rule = scaleRule.flatMap(ScaleRule.init) ?? (method == .lors ? .rslora : .lora)
    let initialization = self.initialization ?? (method == .lors ? "gradient" : "random")
    let targetNames = targets.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }

    let llama = try LlamaModel.load(model, maxPositions: seqLen)
    let T = min(seqLen, llama.config.maxPositionEmbeddings)
    let tokenizer = try Tokenizer.forCheckpoint(model)
    let eos = Int32(llama.config.eosTokenIDs.first ?? tokenizer.id(of: "<|endoftext|>").map(Int.init) ?? 0)
    let records = try Corpus.records(data)
    let trainingData = TrainingData(records: records, tokenizer: tokenizer, length: T, eos: eos)
    guard !trainingData.windows.isEmpty else { throw ValidationError("\(data): no training windows (empty, or every example's prompt fills --seq-len)") }
    if trainingData.skipped > 0 { Log.warning("\(trainingData.skipped) examples skipped: their prompt alone fills \(T) tokens") }
    let totalSteps = steps ?? max(1, Int((epochs * Double(trainingData.windows.count) / Double(batchSize * gradAccum)).rounded(.up)))
    Log.info("data: \(records.count) records -> \(trainingData.windows.count) windows of \(T) tokens, \(trainingData.targetTokens) target tokens; \(totalSteps) steps")

    let adapters = try AdapterSet(model: llama, method: method, rank: rank, scale: rule.scale(alpha: alpha, rank: rank), targets: targetNames)
    adapters.dropout = Float(dropout)
    let fingerprint = adapters.baseFingerprint(model: llama)
    var options = TrainingOptions(steps: totalSteps, schedule: CosineSchedule(base: lr, floor: minLr, warmup: warmup, total: totalSteps))
    options.batchSize = batchSize
    options.gradAccum = gradAccum
    options.weightDecay = weightDecay
    options.maxGradNorm = maxGradNorm
    options.seed = seed
    options.gradient = LoRSGradient(rawValue: gradient)!
    let run = RunSettings(
      method: method, rank: rank, alpha: alpha, dropout: dropout, scaleRule: rule, scale: adapters.scale, gradient: options.gradient,
      targets: targetNames, initialization: initialization, initSamples: initSamples, seqLen: T, options: options,
      baseFingerprint: fingerprint, windows: trainingData.windows.count, targetTokens: trainingData.targetTokens)
    let store = TrainingStore(directory: output)

    let trainer: Trainer
    if resume {
      guard let latest = try store.latestCheckpoint() else { throw ValidationError("--resume: no checkpoint in \(output)/checkpoints") }
      let differences = run.differences(from: try store.settings(latest))
      guard differences.isEmpty else {
        throw ValidationError("--resume: the checkpoint was made with other settings: " + differences.joined(separator: "; "))
      }
      let state = try store.load(latest, layout: adapters.params.layout)
      trainer = try Trainer(model: llama, adapters: adapters, data: trainingData, T: T, options: options)
      try trainer.restore(state)
      try store.truncateLog(afterStep: state.step)
      Log.info("resumed from \(latest) at step \(state.step)")
    } else {
      try store.create(replacing: overwrite)
      try initialize(adapters, llama: llama, data: trainingData, T: T, how: initialization)
      trainer = try Trainer(model: llama, adapters: adapters, data: trainingData, T: T, options: options)
    }
    Log.info(
      "\(method.rawValue): \(adapters.prefixes.count) projections, \(adapters.params.layout.totalCount) trainable parameters, "
        + "scale \(adapters.scale) (\(rule.rawValue)); activations \(Format.bytes(trainer.runner.activationBytes))")

    var last: StepRecord?
    var trainedSeconds = 0.0, trainedTokens = 0
    let firstStep = trainer.step
    while trainer.step < totalSteps {
      let record: StepRecord
      do {
        record = try trainer.trainStep()
      } catch {
        guard case .training(let why) = error else { throw error }
        Log.error(why)
        throw ExitStatus.checkFailed
      }
      last = record
      trainedSeconds += record.seconds
      trainedTokens += record.tokens
      try store.appendLog(record, elapsed: clock.seconds)
      let rate = Double(trainedTokens) / max(trainedSeconds, 1e-9)
      let eta = trainedSeconds / Double(record.step - firstStep) * Double(totalSteps - record.step)
      Log.info(
        "step \(record.step)/\(totalSteps)  loss \(Format.fixed(record.loss, 4))  lr \(String(format: "%.3g", record.learningRate))  "
          + "\(Int(rate)) tok/s  ETA \(Self.duration(eta))")
      if (saveEvery > 0 && record.step % saveEvery == 0) || record.step == totalSteps {
        try store.save(trainer.state, run: run, layout: adapters.params.layout)
      }
    }
    try store.writeAdapter(adapters, run: run, baseModel: model, finalLoss: last?.loss)
    Summary.print(
      output: output, run: run, steps: totalSteps, last: last, tokensPerSecond: Double(trainedTokens) / max(trainedSeconds, 1e-9),
      seconds: clock.seconds, json: json)
  }

  /// LoRS' gradient-SVD init over the first --init-samples windows of the training order, or the seeded random init.
  func initialize(_ adapters: AdapterSet, llama: LlamaModel, data: TrainingData, T: Int, how: String) throws {
    guard how == "gradient" else {
      adapters.initializeRandomly(seed: seed)
      return
    }
    var order = WindowOrder(count: data.windows.count, seed: seed)
    var cursor = DataCursor()
    let count = min(initSamples, data.windows.count) / batchSize * batchSize
    let indices = order.take(max(count, batchSize), from: &cursor)
    var batches: [([Int32], [Int32])] = []
    for start in stride(from: 0, to: indices.count, by: batchSize) {
      let slice = indices[start..<(start + batchSize)]
      batches.append((slice.flatMap { data.windows[$0].inputs }, slice.flatMap { data.windows[$0].targets }))
    }
    let progress = Progress("init: gradients", total: adapters.prefixes.count)
    let gradients = try GradientInit.estimateGradients(
      model: llama, prefixes: adapters.prefixes, batches: batches, B: batchSize, T: T, maxMemory: try ByteSize.parse(maxMemory)
    ) { done, _ in progress.update(done) }
    try GradientInit.initialize(adapters, model: llama, gradients: gradients)
    Log.info("init: top-\(adapters.rank) right singular vectors of gradients averaged over \(batches.count) batches of \(batchSize)")
  }

  static func duration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
  }
}
