// `espalier finetune` as one library call: load the base and the data, build the adapters, initialise
// them (or resume from the newest checkpoint with the same settings), train with checkpoints every
// `saveEvery` steps and a JSON line per step, and write the PEFT adapter with espalier.json. Progress is
// reported through a callback; the bytes go through Formats' TrainingStore.

import Formats
import Foundation

public enum AdapterInit: String, Sendable, CaseIterable {
  /// LoRS' gradient-SVD initialisation from a one-pass sketch of every gradient (GradientSketch): no
  /// dense gradient held.
  case gradient
  /// The same from the exact SVD of every dense averaged gradient (GradientInit; memory: the gradients).
  case gradientExact = "gradient-exact"
  /// Kaiming-uniform input side, zero output side (PEFT's default).
  case random
}

public struct FinetuneOptions: Sendable {
  public var method: AdapterMethod = .lors
  public var rank = 16
  public var alpha = 16.0
  /// nil: rslora for lors, lora for the baselines.
  public var scaleRule: ScaleRule?
  public var gradient: LoRSGradient = .reordered
  public var dropout = 0.0
  public var targets = ProjectionNames.all
  /// nil: gradient for lors, random for the baselines.
  public var initialization: AdapterInit?
  public var initSamples = 128
  /// Bytes of dense gradients the gradient init may hold at once.
  public var maxMemory = 2_000_000_000
  /// How the base model is held, and whether activations are recomputed in backward (the memory plan's choices).
  public var residency = LlamaModel.Residency.resident
  public var recomputedLayers = 0
  public var lr = 2e-5
  public var minLr = 1e-6
  public var warmup = 0
  /// Warmup as a fraction of a run's steps, added to `warmup` (LoSA: of each round's steps).
  public var warmupRatio = 0.0
  public var weightDecay = 0.0
  public var maxGradNorm = 1.0
  public var batchSize = 4
  public var gradAccum = 4
  public var seqLen = 512
  /// nil: from `epochs`.
  public var steps: Int?
  public var epochs = 3.0
  public var seed: UInt64 = 0
  /// Checkpoint every N steps (0 = only at the end).
  public var saveEvery = 100
  /// Continue from the newest checkpoint in the output directory.
  public var resume = false
  /// Start afresh in an existing output directory.
  public var overwrite = false
  /// The ranks sharing every global batch (MPI), or one process. Rank 0 writes; a resumed run may have
  /// another number of ranks than the run that saved.
  public var cluster = Cluster.single
  public init() {}

  /// Refuses settings that cannot train, each with a message that names the flag.
  public func check() throws(SurgeryError) {
    func require(_ condition: Bool, _ message: String) throws(SurgeryError) { if !condition { throw .invalidRequest(message) } }
    try require(!targets.isEmpty, "--targets is empty")
    for name in targets { try require(ProjectionNames.all.contains(name), "--targets: unknown projection `\(name)` (choose from \(ProjectionNames.all.joined(separator: ", ")))") }
    try require(!((initialization == .gradient || initialization == .gradientExact) && method == .spp), "--init gradient needs a low-rank method; spp starts from b = 0")
    try require(dropout >= 0 && dropout < 1, "--dropout must be in [0, 1)")
    try require(dropout == 0 || method == .lora || method == .sqft,
      "--dropout applies to lora and sqft: \(method.rawValue) merges its adapter into the weight, leaving no branch to drop")
    try require(rank >= 1 && alpha > 0 && alpha.isFinite, "--rank must be >= 1 and --alpha a finite number > 0")
    try require(lr > 0 && lr.isFinite && minLr >= 0 && minLr <= lr && warmup >= 0 && warmupRatio >= 0 && warmupRatio <= 1,
      "need a finite --lr > 0 and 0 <= --min-lr <= --lr, --warmup >= 0")
    try require(weightDecay >= 0 && weightDecay.isFinite && maxGradNorm >= 0 && maxGradNorm.isFinite, "--weight-decay and --max-grad-norm must be finite and >= 0")
    try require(batchSize >= 1 && gradAccum >= 1 && seqLen >= 2 && initSamples >= 1 && saveEvery >= 0 && epochs > 0 && (steps ?? 1) >= 1,
      "--batch-size, --grad-accum, --init-samples, --steps must be >= 1, --seq-len >= 2, --save-every >= 0, --epochs > 0")
    try require(!(resume && overwrite), "--resume and --overwrite exclude each other")
    try require(method != .losa || (resolvedInit == .random && resolvedScaleRule == .lora),
      "--method losa starts every iteration's adapters at B = 0 (--init random) with s = alpha/r (--scale-rule lora)")
  }

  /// The trainer's options for a run of `steps` steps (a cosine schedule over exactly those steps).
  public func training(steps: Int) -> TrainingOptions {
    let warmupSteps = warmup + Int((warmupRatio * Double(steps)).rounded())
    var t = TrainingOptions(steps: steps, schedule: CosineSchedule(base: lr, floor: minLr, warmup: warmupSteps, total: steps))
    (t.batchSize, t.gradAccum, t.weightDecay, t.maxGradNorm) = (batchSize, gradAccum, weightDecay, maxGradNorm)
    (t.seed, t.gradient, t.recomputedLayers) = (seed, gradient, recomputedLayers)
    t.cluster = cluster
    return t
  }

  /// Takes `method`'s reference recipe (MethodRecipe): learning rate and floor, warmup, weight decay,
  /// gradient clipping, dropout, and the alpha that gives its scale at `rank` under the scale rule.
  public mutating func applyRecipe() {
    let r = MethodRecipe.of(method)
    (lr, minLr, warmup, warmupRatio) = (r.lr, r.minLr, r.warmupSteps, r.warmupRatio)
    (weightDecay, maxGradNorm, dropout) = (r.weightDecay, r.maxGradNorm, r.dropout)
    alpha = r.alpha(rank: rank, rule: resolvedScaleRule)
  }

  public var resolvedScaleRule: ScaleRule { scaleRule ?? (method == .lors ? .rslora : .lora) }
  public var resolvedInit: AdapterInit { initialization ?? (method == .lors ? .gradient : .random) }
}

/// What a run reports while it works.
public enum FinetuneEvent: Sendable {
  case info(String)
  case warning(String)
  /// Gradient-init passes: projections whose averaged gradient is done.
  case initProgress(done: Int, total: Int)
  /// A step was taken; throughput and the estimated seconds left are over this process's steps.
  case step(StepRecord, totalSteps: Int, tokensPerSecond: Double, secondsLeft: Double)
}

public struct FinetuneReport: Sendable {
  public var settings: FinetuneSettings
  public var steps: Int
  public var last: StepRecord?
  public var tokensPerSecond: Double
  /// LoSA: what each iteration decided and measured.
  public var losa: [LoSAIteration] = []
}

/// The settings a checkpoint must share with the run that resumes it (trainer_state.json's "run").
public struct FinetuneSettings: Sendable {
  public var method: AdapterMethod
  public var rank: Int
  public var alpha: Double
  public var dropout: Double
  public var scaleRule: ScaleRule
  public var scale: Float
  public var gradient: LoRSGradient
  public var targets: [String]
  public var initialization: AdapterInit
  public var initSamples: Int
  public var seqLen: Int
  public var training: TrainingOptions
  public var baseFingerprint: String
  public var windows: Int
  public var targetTokens: Int

  var fields: [(String, JSONValue)] {
    func number<T>(_ v: T) -> JSONValue { .number(String(describing: v)) }
    return [
      ("method", .string(method.rawValue)), ("rank", number(rank)), ("alpha", number(alpha)), ("dropout", number(dropout)),
      ("scale_rule", .string(scaleRule.rawValue)), ("scale", number(scale)), ("gradient", .string(gradient.rawValue)),
      ("targets", .array(targets.map { .string($0) })), ("init", .string(initialization.rawValue)), ("init_samples", number(initSamples)),
      ("seq_len", number(seqLen)), ("batch_size", number(training.batchSize)), ("grad_accum", number(training.gradAccum)),
      ("steps", number(training.steps)), ("lr", number(training.schedule.base)), ("min_lr", number(training.schedule.floor)),
      ("warmup", number(training.schedule.warmup)), ("weight_decay", number(training.weightDecay)),
      ("max_grad_norm", number(training.maxGradNorm)), ("seed", number(training.seed)),
      ("base_fingerprint", .string(baseFingerprint)), ("data_windows", number(windows)), ("data_target_tokens", number(targetTokens)),
    ]
  }

  public var json: JSONValue { .object(JSONObject(fields)) }

  /// "key: checkpoint X, now Y" for every field that differs.
  func differences(from saved: JSONObject) -> [String] {
    fields.compactMap { key, value in
      let old = saved[key] ?? .null
      return old == value ? nil : "\(key): checkpoint \(JSONWriter.pretty(old)), now \(JSONWriter.pretty(value))"
    }
  }
}

public enum Finetune {
  /// Trains adapters on the checkpoint at `modelPath` with the records of `dataPath`, into `output`.
  /// Checks OUT before anything is loaded: absent, or a run to --resume, or (--overwrite) a directory
  /// holding only what a run writes; never a symbolic link, nor the model or the data (OutputPath).
  static func claim(
    _ output: String, modelPath: String, dataPath: String, options o: FinetuneOptions, calibration: String? = nil
  ) throws(SurgeryError) {
    do {
      try OutputPath.claim(
        output, overwrite: o.overwrite, inputs: [modelPath, dataPath] + (calibration.map { [$0] } ?? []),
        existing: o.resume ? .resumable : .refused)
    } catch { throw .format(error) }
  }

  public static func run(
    modelPath: String, dataPath: String, output: String, options o: FinetuneOptions, events: (FinetuneEvent) -> Void
  ) throws(SurgeryError) -> FinetuneReport {
    if o.method == .losa { throw .invalidRequest("--method losa runs through LoSA.run (it needs --sparsity)") }
    let cluster = o.cluster
    if cluster.size > 1 && o.resolvedInit == .gradientExact {
      throw .invalidRequest("--init gradient-exact holds every dense gradient in one process; under MPI use --init gradient (its sketches are summed over the ranks)")
    }
    // Refused before any work, not after the gradient init.
    _ = try Trainer.sharesMicroBatches(batchSize: o.batchSize, gradAccum: o.gradAccum, ranks: cluster.size)
    if cluster.isRoot { try claim(output, modelPath: modelPath, dataPath: dataPath, options: o) }
    let started = Date()
    let llama = try LlamaModel.load(modelPath, maxPositions: o.seqLen, residency: o.residency)
    let T = min(o.seqLen, llama.config.maxPositionEmbeddings)
    let (_, data, totalSteps) = try trainingData(modelPath: modelPath, dataPath: dataPath, config: llama.config, T: T, options: o, events: events)

    let rule = o.resolvedScaleRule
    let adapters = try AdapterSet(model: llama, method: o.method, rank: o.rank, scale: rule.scale(alpha: o.alpha, rank: o.rank), targets: o.targets)
    adapters.dropout = Float(o.dropout)
    let training = o.training(steps: totalSteps)
    let settings = FinetuneSettings(
      method: o.method, rank: o.rank, alpha: o.alpha, dropout: o.dropout, scaleRule: rule, scale: adapters.scale, gradient: o.gradient,
      targets: o.targets, initialization: o.resolvedInit, initSamples: o.initSamples, seqLen: T, training: training,
      baseFingerprint: try adapters.baseFingerprint(model: llama), windows: data.windows.count, targetTokens: data.targetTokens)
    let store = TrainingStore(directory: output)

    let trainer: Trainer = try SurgeryError.wrapping(output) {
      if o.resume {
        // Rank 0 tidies the directory before any rank looks for the newest checkpoint (a shared file system).
        if cluster.isRoot { store.removeDeadPartials() }
        try cluster.barrier()
        guard let latest = store.latestCheckpoint() else { throw SurgeryError.resume("no checkpoint in \(store.checkpoints)") }
        let state = try store.checkpointState(latest)
        let differences = settings.differences(from: state["run"]?.objectValue ?? JSONObject())
        guard differences.isEmpty else {
          throw SurgeryError.resume("the checkpoint was made with other settings: " + differences.joined(separator: "; "))
        }
        let trainer = try Trainer(model: llama, adapters: adapters, data: data, T: T, options: training)
        try trainer.restore(try TrainingCheckpoint.state(state, try store.checkpointTensors(latest), layout: adapters.params.layout, path: latest))
        if cluster.isRoot { try store.truncateLog(afterStep: trainer.step) }
        events(.info("resumed from \(latest) at step \(trainer.step)"))
        return trainer
      }
      if cluster.isRoot { try store.create(replacing: o.overwrite) }
      try initialize(adapters, llama: llama, data: data, T: T, options: o, events: events)
      // Every rank starts from rank 0's adapters, whatever a rank's own LAPACK would have computed.
      try cluster.broadcast(adapters.params.base, bytes: adapters.params.layout.totalCount * MemoryLayout<Float>.stride, from: 0)
      return try Trainer(model: llama, adapters: adapters, data: data, T: T, options: training)
    }
    events(.info(
      "\(o.method.rawValue): \(adapters.prefixes.count) projections, \(adapters.params.layout.totalCount) trainable parameters, "
        + "scale \(adapters.scale) (\(rule.rawValue)); activations \(trainer.runner.activationBytes / 1_000_000) MB"))

    let run = try train(trainer, steps: totalSteps, store: store, started: started, events: events) { (record) throws(FormatError) in
      if cluster.isRoot && (o.saveEvery > 0 && record.step % o.saveEvery == 0) || record.step == totalSteps {
        try store.saveCheckpoint(
          step: record.step, tensors: TrainingCheckpoint.sources(trainer), state: TrainingCheckpoint.stateObject(trainer, settings: settings))
      }
    }
    let (last, seconds, tokens) = (run.last, run.seconds, run.tokens)
    if cluster.isRoot { do {
      let others = try BaseFingerprint.others(try Checkpoint.open(modelPath), excluding: adapters.prefixes)
      try store.writeAdapter(
        TrainingCheckpoint.peftSources(adapters), config: peftConfig(adapters, settings: settings, baseModel: modelPath),
        record: adapterRecord(settings, baseModel: modelPath, othersFingerprint: others, finalLoss: last?.loss))
    } catch { throw .format(error) } }
    return FinetuneReport(settings: settings, steps: totalSteps, last: last, tokensPerSecond: Double(tokens) / max(seconds, 1e-9))
  }

  /// The tokenizer, the training windows of `dataPath` and the number of optimizer steps (--steps, or
  /// from --epochs).
  static func trainingData(
    modelPath: String, dataPath: String, config: LlamaConfig, T: Int, options o: FinetuneOptions, events: (FinetuneEvent) -> Void
  ) throws(SurgeryError) -> (Tokenizer, TrainingData, steps: Int) {
    let tokenizer: Tokenizer, records: [TrainingRecord]
    do {
      tokenizer = try Tokenizer.forCheckpoint(modelPath)
      records = try Corpus.records(dataPath)
    } catch { throw .format(error) }
    let eos = Int32(config.eosTokenIDs.first ?? tokenizer.id(of: "<|endoftext|>").map(Int.init) ?? 0)
    let data = TrainingData(records: records, tokenizer: tokenizer, length: T, eos: eos)
    guard !data.windows.isEmpty else { throw .noTrainingData(path: dataPath, windowLength: T) }
    if data.skipped > 0 { events(.warning("\(data.skipped) examples skipped: their prompt alone fills \(T) tokens")) }
    let totalSteps = o.steps ?? max(1, Int((o.epochs * Double(data.windows.count) / Double(o.batchSize * o.gradAccum)).rounded(.up)))
    events(.info("data: \(records.count) records -> \(data.windows.count) windows of \(T) tokens, \(data.targetTokens) target tokens; \(totalSteps) steps"))
    return (tokenizer, data, totalSteps)
  }

  /// Steps `trainer` until its step count reaches `steps`: a log line and `after(record)` (checkpoints)
  /// per step, and a step event whose step counts from `offset` out of `reportedTotal` (LoSA's iterations
  /// report one run).
  static func train(
    _ trainer: Trainer, steps: Int, store: TrainingStore, started: Date, offset: Int = 0, reportedTotal: Int? = nil,
    events: (FinetuneEvent) -> Void, after: (StepRecord) throws(FormatError) -> Void = { _ in }
  ) throws(SurgeryError) -> (last: StepRecord?, seconds: Double, tokens: Int) {
    var last: StepRecord?
    var seconds = 0.0, tokens = 0
    let firstStep = trainer.step
    while trainer.step < steps {
      let local = try trainer.trainStep()
      var record = local
      record.step += offset
      do {
        if trainer.options.cluster.isRoot { try store.appendLog(TrainingCheckpoint.logEntry(record, elapsed: Date().timeIntervalSince(started))) }
        try after(local)
      } catch { throw .format(error) }
      last = record
      seconds += record.seconds
      tokens += record.tokens
      let secondsLeft = seconds / Double(trainer.step - firstStep) * Double(steps - trainer.step)
      events(.step(record, totalSteps: reportedTotal ?? steps, tokensPerSecond: Double(tokens) / max(seconds, 1e-9), secondsLeft: secondsLeft))
    }
    return (last, seconds, tokens)
  }

  /// LoRS' gradient-SVD init over the first `initSamples` windows of the training order, or the seeded
  /// random init.
  static func initialize(
    _ adapters: AdapterSet, llama: LlamaModel, data: TrainingData, T: Int, options o: FinetuneOptions, events: (FinetuneEvent) -> Void
  ) throws(SurgeryError) {
    guard o.resolvedInit != .random else {
      adapters.initializeRandomly(seed: o.seed)
      return
    }
    var order = WindowOrder(count: data.windows.count, seed: o.seed)
    var cursor = DataCursor()
    let count = min(o.initSamples, data.windows.count) / o.batchSize * o.batchSize
    let indices = order.take(max(count, o.batchSize), from: &cursor)
    let batches = stride(from: 0, to: indices.count, by: o.batchSize).map { start in
      let slice = indices[start..<(start + o.batchSize)]
      return (slice.flatMap { data.windows[$0].inputs }, slice.flatMap { data.windows[$0].targets })
    }
    try withoutActuallyEscaping(events) { (events) throws(SurgeryError) in
      if o.resolvedInit == .gradientExact {
        let gradients = try GradientInit.estimateGradients(
          model: llama, prefixes: adapters.prefixes, batches: batches, B: o.batchSize, T: T, maxMemory: o.maxMemory
        ) { done, total in events(.initProgress(done: done, total: total)) }
        try GradientInit.initialize(adapters, model: llama, gradients: gradients)
      } else {
        let vectors = try GradientInit.sketchedRightSingularVectors(
          model: llama, prefixes: adapters.prefixes, batches: batches, B: o.batchSize, T: T, rank: adapters.rank,
          seed: o.seed, recomputedLayers: o.recomputedLayers, cluster: o.cluster
        ) { done, total in events(.initProgress(done: done, total: total)) }
        try GradientInit.initialize(adapters, rightSingularVectors: vectors)
      }
    }
    let how = o.resolvedInit == .gradientExact ? "exact SVD" : "one-pass sketch"
    events(.info("init: top-\(adapters.rank) right singular vectors (\(how)) of gradients averaged over \(batches.count) batches of \(o.batchSize)"))
  }

  static func peftConfig(_ adapters: AdapterSet, settings: FinetuneSettings, baseModel: String) -> PEFTAdapterConfig {
    PEFTAdapterConfig(
      rank: adapters.method == .spp ? SPPLinear.rowBlocks : adapters.rank, alpha: settings.alpha, targetModules: settings.targets.sorted(),
      dropout: settings.dropout, useRSLoRA: settings.scaleRule == .rslora, baseModel: baseModel)
  }

  /// espalier.json: what merge needs (method, scale, base fingerprint) and what a reader wants to know.
  static func adapterRecord(_ s: FinetuneSettings, baseModel: String, othersFingerprint: String, finalLoss: Double?) -> JSONObject {
    JSONObject([
      ("format", .string("espalier adapter 1")),
      ("method", .string(s.method.rawValue)),
      ("scale_rule", .string(s.scaleRule.rawValue)), ("scale", .number(String(s.scale))),
      ("rank", .number(String(s.rank))), ("alpha", .number(String(s.alpha))), ("gradient", .string(s.gradient.rawValue)),
      ("targets", .array(s.targets.map { .string($0) })),
      ("mask_source", .string(s.method.preservesSparsity ? "base weights: M = (W != 0) of each adapted projection" : "none (dense LoRA)")),
      ("merge", .string(mergeFormula(s.method))),
      ("peft_naming", .string(peftNaming(s.method))),
      ("base_model", .string(baseModel)), ("base_fingerprint", .string(s.baseFingerprint)),
      ("base_fingerprint_others", .string(othersFingerprint)),
      ("steps", .number(String(s.training.steps))), ("final_loss", finalLoss.map { .number(String($0)) } ?? .null),
      ("settings", s.json),
    ])
  }

  static func mergeFormula(_ method: AdapterMethod) -> String {
    switch method {
    case .lors: return "W' = (W + s * lora_B @ lora_A) * (W != 0)   (PEFT names; LoRS' A (out, r) is lora_B, its B (r, in) is lora_A)"
    case .sqft: return "W' = W + (s * lora_B @ lora_A) * (W != 0)"
    case .losa: return "W' = W + (s * lora_B @ lora_A) * (W != 0)   (rank per block: rank_pattern; W is base/, the final pruned base)"
    case .lora: return "W' = W + s * lora_B @ lora_A   (dense: fills the zeros)"
    case .spp: return "W' = W * (1 + s * repeat_interleave(lora_A, out/16, dim=0) * lora_B)   (lora_A (16, in), lora_B (out, 1))"
    }
  }

  static func peftNaming(_ method: AdapterMethod) -> String {
    switch method {
    case .lors, .losa: return "lora_A.weight = LoRS B (r, in); lora_B.weight = LoRS A (out, r)"
    case .lora, .sqft: return "PEFT's own: lora_A.weight (r, in), lora_B.weight (out, r)"
    case .spp: return "lora_A.weight = SPP A (16, in); lora_B.weight = SPP b (out, 1); not loadable by PEFT"
    }
  }
}
