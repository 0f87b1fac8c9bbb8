// LoSA (Huang et al., "Dynamic Low-Rank Sparse Adaptation for Large Language Models", ICLR 2025;
// wzhuang-xmu/LoSA, algorithms.md §6): prune and tune together, from a dense (or lightly pruned) model to
// sparsity S in T iterations. Iteration t:
//
//   1. the layer importance of the current model (base + adapters) from linear CKA between the blocks'
//      inputs over the first `similaritySamples` calibration windows (LayerImportance);
//   2. per-layer rates around S_t = S − S(1 − t/T)³ within ±δ, and whole row-zero counts that add up to
//      uniform Wanda's at S_t (LoSAAllocation);
//   3. re-prune, layer-sequentially (Pruner): the adapters' masked delta is merged into each block as it is
//      read, the block is pruned by Wanda (or SparseGPT) at its rate, and its output is compared with the
//      ORIGINAL dense model's (streamed beside it): the reconstruction loss per block;
//   4. per-layer ranks in proportion to those losses, mean rank m_t = m_1 + t − 1;
//   5. fresh adapters of those ranks on the new base (LoRS' layer: the delta masked by the current mask in
//      forward and backward), trained on the next slice of the data (one seeded order across iterations).
//
// Where this differs from the reference, and why: the reference merges, prunes and then UNMERGES the
// adapters with the new mask, keeping the trained factors (and their columns past a shrunken rank, which
// then silently drop out of the model). Here the merged delta stays in the pruned base and the next
// iteration's adapters start from zero (B = 0): the model computes the same function at every iteration
// boundary, a rank may shrink without losing anything, and the saved base plus the final adapter merge to
// the final model with `espalier merge`. The AdamW state restarts every iteration in both. The steps
// split as the reference's data slices do: the last iteration takes `finalShare` (6000 of 10000 examples
// there), the others share the rest equally.

import Formats
import Foundation

public struct LoSAOptions: Sendable {
  /// The final sparsity S (unstructured).
  public var sparsity: Double
  public var iterations = 5
  public var pruner: PruneMethod = .wanda
  /// Calibration text (default: the training data).
  public var calibration: String?
  /// Windows of the re-prune's calibration, and how many of them measure layer similarity.
  public var calibrationSamples = 32
  public var similaritySamples = 16
  /// Mean rank of the first iteration; it grows by one per iteration. The adapters' largest rank is the
  /// finetune --rank.
  public var firstMeanRank = 6
  /// Fraction of the steps the last iteration trains.
  public var finalShare = 0.6
  /// Bytes of calibration hidden states kept in memory (the pruned and the dense stream each); beyond it
  /// they live in temporary files.
  public var calibrationMemory = 4_000_000_000
  /// β of imp = exp(−β·sim/Σsim) (reported; the allocation depends only on the order of the importances).
  public var beta = 1.0

  public init(sparsity: Double) { self.sparsity = sparsity }

  public func check(rank: Int) throws(SurgeryError) {
    func require(_ condition: Bool, _ message: String) throws(SurgeryError) { if !condition { throw .invalidRequest(message) } }
    try require(sparsity > 0 && sparsity < 1, "--sparsity must be in (0, 1) for --method losa")
    try require(iterations >= 1, "--iterations must be >= 1")
    try require(pruner != .magnitude, "--pruner must be wanda or sparsegpt (LoSA calibrates layer by layer)")
    try require(calibrationSamples >= 2 && similaritySamples >= 2 && similaritySamples <= calibrationSamples,
      "need 2 <= --similarity-samples <= --calibration-samples")
    try require(firstMeanRank >= 1 && firstMeanRank + iterations - 1 <= rank,
      "--rank (the largest per-layer rank, \(rank)) must be at least the last iteration's mean rank \(firstMeanRank + iterations - 1)")
    try require(finalShare > 0 && finalShare <= 1, "--final-share must be in (0, 1]")
  }

  /// Optimizer steps of each iteration: the last takes `finalShare` of `total`, the others split the rest.
  public func steps(total: Int) -> [Int] {
    guard iterations > 1 else { return [total] }
    let last = max(1, min(total - (iterations - 1), Int((Double(total) * finalShare).rounded())))
    let rest = total - last
    return (0..<(iterations - 1)).map { rest / (iterations - 1) + ($0 < rest % (iterations - 1) ? 1 : 0) } + [last]
  }
}

/// What one LoSA iteration decided and measured.
public struct LoSAIteration: Sendable {
  public var iteration: Int
  public var target: Double
  public var delta: Double
  public var similarity: [Double]
  public var importance: [Double]
  public var rates: [Double]
  /// Zeros per row of each block, by projection input width.
  public var rowZeros: [Int: [Int]]
  public var reconstruction: [Double]
  public var meanRank: Int
  public var ranks: [Int]
  public var zeros: Int
  public var elements: Int
  public var steps: Int
  public var finalLoss: Double?
  public var seconds: Double
  public var sparsity: Double { elements == 0 ? 0 : Double(zeros) / Double(elements) }

  public var json: JSONValue {
    func numbers<T>(_ values: [T]) -> JSONValue { .array(values.map { .number(String(describing: $0)) }) }
    return .object(JSONObject([
      ("iteration", .number(String(iteration))), ("target_sparsity", .number(String(target))), ("delta", .number(String(delta))),
      ("sparsity", .number(String(sparsity))), ("zeros", .number(String(zeros))), ("elements", .number(String(elements))),
      ("similarity", numbers(similarity)), ("importance", numbers(importance)), ("rates", numbers(rates)),
      ("row_zeros", .object(JSONObject(rowZeros.sorted { $0.key < $1.key }.map { (String($0.key), numbers($0.value)) }))),
      ("reconstruction_loss", numbers(reconstruction)), ("mean_rank", .number(String(meanRank))), ("ranks", numbers(ranks)),
      ("steps", .number(String(steps))), ("final_loss", finalLoss.map { .number(String($0)) } ?? .null),
      ("seconds", .number(String(seconds))),
    ]))
  }
}

public enum LoSA {
  /// Runs LoSA on the checkpoint at `modelPath` with the training records of `dataPath`; `output` ends
  /// with the adapter (PEFT, per-layer ranks), base/ (the final pruned base) and losa.json.
  public static func run(
    modelPath: String, dataPath: String, output: String, options o: FinetuneOptions, losa: LoSAOptions,
    events: (FinetuneEvent) -> Void
  ) throws(SurgeryError) -> FinetuneReport {
    try losa.check(rank: o.rank)
    guard !o.resume else { throw .invalidRequest("--resume is not supported for --method losa (each iteration rewrites the base)") }
    guard o.cluster.size == 1 else {
      throw .invalidRequest("--method losa runs in one process (its re-pruning rounds are not shared out under MPI); run it without mpirun")
    }
    try Finetune.claim(output, modelPath: modelPath, dataPath: dataPath, options: o, calibration: losa.calibration)
    let started = Date()
    let config = try SurgeryError.wrapping(modelPath) { try LlamaConfig.of(try Checkpoint.open(modelPath)) }
    let T = min(o.seqLen, config.maxPositionEmbeddings)
    let (tokenizer, data, totalSteps) = try Finetune.trainingData(
      modelPath: modelPath, dataPath: dataPath, config: config, T: T, options: o, events: events)
    let calibrationPath = losa.calibration ?? dataPath
    let windows: [[Int32]]
    do {
      let tokens = tokenizer.encode(try Corpus.text(calibrationPath))
      windows = try Calibration.windows(from: tokens, count: losa.calibrationSamples, length: T, seed: o.seed)
    } catch let error as FormatError { throw .format(error) } catch let error as SurgeryError { throw error } catch {
      throw .invalidRequest("\(error)")
    }
    let stepsPerIteration = losa.steps(total: totalSteps)
    let scale = ScaleRule.lora.scale(alpha: o.alpha, rank: o.rank)
    let store = TrainingStore(directory: output)
    try SurgeryError.wrapping(output) {
      try store.create(replacing: o.overwrite)
      FileSystem.removeTree(store.losaWork)
      try FileSystem.makeDirectories(store.losaWork)
    }
    var finished = false
    defer { if !finished { FileSystem.removeTree(store.losaWork) } }
    events(.info(
      "losa: \(losa.iterations) iterations to \(losa.sparsity) (\(losa.pruner.rawValue)), steps \(stepsPerIteration.map(String.init).joined(separator: "+")), "
        + "\(windows.count) calibration windows (\(losa.similaritySamples) for similarity)"))

    var basePath = modelPath
    var adapters: AdapterSet?
    var cursor = DataCursor()
    var iterations: [LoSAIteration] = []
    var trainer: Trainer?
    var done = 0, seconds = 0.0, tokens = 0
    var last: StepRecord?
    for t in 1...losa.iterations {
      let iterationStart = Date()
      // The last round's model and activations go before this round loads its own (only its adapters stay).
      trainer = nil
      let target = LoSAAllocation.target(iteration: t, of: losa.iterations, final: losa.sparsity)
      let delta = LoSAAllocation.delta(target)
      let next = store.losaWork + "/iteration-\(t)"
      let step = try reprune(
        base: basePath, adapters: adapters, dense: modelPath, to: next, windows: windows, target: target, delta: delta, T: T,
        previous: iterations.last?.rowZeros ?? [:], options: o, losa: losa)
      let report = step.report
      if basePath != modelPath { FileSystem.removeTree(basePath) }
      basePath = next
      // 4. Ranks from the reconstruction losses.
      let meanRank = losa.firstMeanRank + t - 1
      let ranks = LoSAAllocation.ranks(losses: report.reconstruction, meanRank: meanRank, maxRank: o.rank)
      events(.info(
        "losa \(t)/\(losa.iterations): sparsity \(String(format: "%.4f", report.sparsity)) (target \(String(format: "%.4f", target)) ± \(delta)), "
          + "ranks \(ranks.map(String.init).joined(separator: ","))"))
      // 5. Fresh adapters on the new base, trained on the next slice.
      let tuned = try LlamaModel.load(basePath, maxPositions: T, residency: o.residency)
      let set = try AdapterSet(model: tuned, method: .losa, rank: o.rank, scale: scale, targets: o.targets, layerRanks: ranks)
      set.initializeRandomly(seed: o.seed ^ (UInt64(t) &* 0x9E37_79B9_7F4A_7C15))
      let training = o.training(steps: stepsPerIteration[t - 1])
      let iterationTrainer = try Trainer(model: tuned, adapters: set, data: data, T: T, options: training, cursor: cursor)
      let run = try Finetune.train(
        iterationTrainer, steps: training.steps, store: store, started: started, offset: done, reportedTotal: totalSteps, events: events)
      cursor = iterationTrainer.cursor
      done += training.steps
      seconds += run.seconds
      tokens += run.tokens
      last = run.last ?? last
      adapters = set
      trainer = iterationTrainer
      iterations.append(LoSAIteration(
        iteration: t, target: target, delta: delta, similarity: step.importance.similarity, importance: step.importance.importance,
        rates: step.rates, rowZeros: step.rowZeros, reconstruction: report.reconstruction, meanRank: meanRank, ranks: ranks, zeros: report.zeros,
        elements: report.elements, steps: training.steps, finalLoss: run.last?.loss, seconds: Date().timeIntervalSince(iterationStart)))
      try SurgeryError.wrapping(store.losaRecord) {
        try AtomicFile.write(JSONWriter.pretty(record(iterations, options: losa)) + "\n", to: store.losaRecord)
      }
    }
    guard let adapters, let trainer else { throw .invalidRequest("--iterations must be >= 1") }
    // The final base goes to OUT/base; the adapter beside it records its fingerprint.
    let settings = FinetuneSettings(
      method: .losa, rank: o.rank, alpha: o.alpha, dropout: 0, scaleRule: .lora, scale: scale, gradient: o.gradient, targets: o.targets,
      initialization: .random, initSamples: o.initSamples, seqLen: T, training: o.training(steps: totalSteps),
      baseFingerprint: try adapters.baseFingerprint(model: trainer.model), windows: data.windows.count, targetTokens: data.targetTokens)
    try SurgeryError.wrapping(output) {
      FileSystem.removeTree(store.losaBase)
      guard Foundation.rename(basePath, store.losaBase) == 0 else {
        throw FormatError.io(file: store.losaBase, reason: "cannot move the final base into place")
      }
      var config = Finetune.peftConfig(adapters, settings: settings, baseModel: store.losaBase)
      for prefix in adapters.prefixes {
        config.rankPattern[prefix] = adapters.rank(of: prefix)
        config.alphaPattern[prefix] = Double(scale) * Double(adapters.rank(of: prefix))
      }
      let others = try BaseFingerprint.others(try Checkpoint.open(store.losaBase), excluding: adapters.prefixes)
      var espalier = Finetune.adapterRecord(settings, baseModel: store.losaBase, othersFingerprint: others, finalLoss: last?.loss)
      espalier["losa"] = record(iterations, options: losa)
      try store.writeAdapter(TrainingCheckpoint.peftSources(adapters), config: config, record: espalier)
      FileSystem.removeTree(store.losaWork)
    }
    finished = true
    var report = FinetuneReport(settings: settings, steps: totalSteps, last: last, tokensPerSecond: Double(tokens) / max(seconds, 1e-9))
    report.losa = iterations
    return report
  }

  /// Steps 1-3 of an iteration: the importance of `base` with `adapters` attached, the rates and row
  /// counts, and the re-pruned base (adapters merged) written to `output`, with reconstruction losses
  /// against the dense model at `dense`. Its models are released when it returns.
  static func reprune(
    base: String, adapters: AdapterSet?, dense densePath: String, to output: String, windows: [[Int32]], target: Double, delta: Double,
    T: Int, previous: [Int: [Int]], options o: FinetuneOptions, losa: LoSAOptions
  ) throws(SurgeryError) -> (report: PruneReport, importance: LayerImportance, rates: [Double], rowZeros: [Int: [Int]]) {
    let model = try LlamaModel.load(base, maxPositions: T, residency: o.residency)
    let dense = model.linears
    adapters?.attach(to: model, gradient: o.gradient)
    let n = min(losa.similaritySamples, windows.count)
    let grams = try LayerImportance.grams(
      model, windows: Array(windows.prefix(n)), batch: o.batchSize, maxMemory: losa.calibrationMemory,
      temporaryDirectory: temporaryDirectory)
    let importance = LayerImportance(grams: grams, n: n, beta: losa.beta)
    let rates = LoSAAllocation.rates(importance: importance.importance, target: target, delta: delta)
    var rowZeros: [Int: [Int]] = [:]
    for width in Set(model.linears[0].map(\.inFeatures)) {
      rowZeros[width] = LoSAAllocation.rowZeros(rates: rates, width: width, target: target, atLeast: previous[width])
    }
    model.linears = dense
    var options = PruneOptions(method: losa.pruner, target: .unstructured(target))
    options.batchSize = o.batchSize
    options.maxMemory = losa.calibrationMemory
    options.temporaryDirectory = temporaryDirectory
    options.layerRowZeros = (0..<model.config.layers).map { l in rowZeros.mapValues { $0[l] } }
    let reference = try LlamaModel.load(densePath, maxPositions: T, residency: .streamed)
    let input = try SurgeryError.wrapping(base) { try Checkpoint.open(base) }
    let (report, _) = try PrunedCheckpoint.prune(
      model, input: input, windows: windows, options: options, dtype: nil, to: output, convert: ConvertOptions(overwrite: false),
      reference: reference, prepareBlock: { (l) throws(SurgeryError) in if let adapters { mergeBlock(l, of: adapters, into: model) } })
    return (report, importance, rates, rowZeros)
  }

  static var temporaryDirectory: String { ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp" }

  /// W ← (W + s·A·B) ⊙ M for every adapted projection of block l (the block's weights as the model holds
  /// them now, in place).
  static func mergeBlock(_ l: Int, of adapters: AdapterSet, into model: LlamaModel) {
    let workspace = AdapterWorkspace()
    for prefix in adapters.prefixes where AdapterSet.position(of: prefix).0 == l {
      let shape = model.params.layout.entry(prefix + ".weight")!.shape
      let (out, inp) = (shape[0], shape[1])
      let weight = model.weight(prefix + ".weight")
      let merged = workspace.pointer(out * inp)
      LoRSLinear.merge(
        into: merged, weight: weight, a: adapters.params.pointer(prefix + ".lora_A")!, b: adapters.params.pointer(prefix + ".lora_B")!,
        out: out, in: inp, rank: adapters.rank(of: prefix), scale: adapters.scale)
      weight.update(from: merged, count: out * inp)
    }
  }

  /// losa.json: the settings and every iteration's decisions.
  static func record(_ iterations: [LoSAIteration], options: LoSAOptions) -> JSONValue {
    .object(JSONObject([
      ("sparsity", .number(String(options.sparsity))), ("iterations", .number(String(options.iterations))),
      ("pruner", .string(options.pruner.rawValue)), ("calibration_samples", .number(String(options.calibrationSamples))),
      ("similarity_samples", .number(String(options.similaritySamples))), ("first_mean_rank", .number(String(options.firstMeanRank))),
      ("final_share", .number(String(options.finalShare))), ("beta", .number(String(options.beta))),
      ("schedule", .string("S_t = S - S(1 - t/T)^3; rates: exact LP min sum x*imp, mean S_t, |x - S_t| <= delta; row zeros sum to uniform Wanda's")),
      ("per_iteration", .array(iterations.map(\.json))),
    ]))
  }
}
