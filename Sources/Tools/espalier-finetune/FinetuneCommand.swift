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
    abstract: "Train sparsity-preserving adapters (LoRS, or the LoRA/SQFT/SPP baselines) on a Llama-family checkpoint, or prune and tune together (LoSA).",
    discussion: """
      MODEL is a checkpoint directory or a GGUF file, usually pruned; its zeros are the mask M = (W != 0) that \
      lors, sqft and spp keep (lora is dense, for comparison). --data is plain text, a directory of text \
      files, JSONL with a "text" field, or Alpaca JSON/JSONL (instruction, input, output; the Alpaca prompt \
      template, loss on the response only, EOS appended). Text is packed into windows of --seq-len tokens.

      OUT receives checkpoints/step-N/ every --save-every steps (adapters, AdamW state, data position), \
      train_log.jsonl (one JSON line per step), and at the end adapter_model.safetensors + \
      adapter_config.json (PEFT format) and espalier.json (method, scale rule, mask source and a \
      fingerprint of the base weights, which merge checks). --resume continues from the newest checkpoint \
      with the same settings and ends where an uninterrupted run would; --overwrite starts afresh, replacing \
      the checkpoints, log and adapter of an earlier run (and nothing else in OUT). Memory: the plan is \
      printed first; a model larger than --max-memory is read one block at a time in every forward and \
      backward pass, and when activations do not fit each block is recomputed in backward. --init gradient \
      sketches every gradient in one pass (q·(out + in) floats each); --init gradient-exact holds the dense \
      gradients that fit what is left, taking more passes for the rest. A LoRS, SQFT or SPP adapter must be \
      merged under the mask (espalier merge), not loaded as a plain LoRA: PEFT would apply it densely.

      --method losa starts from a dense (or lightly pruned) MODEL and ends at --sparsity exactly, in \
      --iterations rounds on the cubic schedule S_t = S - S(1 - t/T)^3: each round measures layer \
      importance (linear CKA between the blocks' inputs on the first --similarity-samples calibration \
      windows), gives every layer a rate within +-delta of S_t (0.01 up to S_t = 0.5, 0.02 to 0.6, 0.03 \
      beyond; the rates' zeros add up to uniform Wanda's), merges the adapters into the base and re-prunes it \
      layer by layer with --pruner on --calibration-samples windows of --calibration (default: --data), \
      gives each layer a rank in proportion to its reconstruction error against the dense model (mean \
      rank 6 in the first round, one more per round, at most --rank) and trains fresh masked adapters on the \
      next slice of the data (the last round takes --final-share of the steps). OUT then also holds base/ \
      (the final pruned base: `espalier merge OUT/base OUT MERGED`, `espalier verify MERGED --base \
      OUT/base`) and losa.json (every round's rates, ranks and losses; also in --json).

      Defaults: every method trains with its reference's recipe unless a flag says otherwise (learning \
      rate and cosine floor, warmup, weight decay, gradient clipping, dropout, and its scale s, from which \
      alpha follows at --rank): lors from the LoRS scripts, lora from Wanda's lora_ft, sqft from SQFT \
      SparsePEFT, spp from SPP's finetune.py, losa from LoSA. The flags' help lists each value; --json and \
      train_log.jsonl record the values used.

      Progress goes to stderr, the summary (or --json report) to stdout. Exit status: 0 trained, 1 training \
      stopped (non-finite loss or gradient; the last checkpoint is kept), 2 unreadable input, 3 the memory \
      plan does not fit, 64 usage.
      """)

  @Argument(help: "The base checkpoint (directory or GGUF file).", completion: .file()) var model: String
  @Option(help: "Training data: text file, directory of text files, JSONL (\"text\" or Alpaca fields) or Alpaca JSON.") var data: String
  @Option(help: "Output directory for checkpoints, the step log and the adapter.") var output: String
  @Option(help: "Adapter method: lors, lora, sqft, spp, or losa (prune and tune together; needs --sparsity).") var method = AdapterMethod.lors
  @Option(help: "Adapter rank r (spp: its A has 16 row blocks whatever r, and r only enters its scale alpha/r; losa: the largest per-layer rank).") var rank = 16
  @Option(help: ArgumentHelp("LoRA alpha; the scale is alpha/sqrt(r) or alpha/r by --scale-rule (default: " + Self.perMethod { r in r.fixedAlpha.map { Format.general($0) } ?? "\(Format.general(r.scale))·r (s = \(Format.general(r.scale)))" } + ")."))
  var alpha: Double?
  @Option(help: "rslora (s = alpha/sqrt(r)) or lora (s = alpha/r); default: rslora for lors, lora for the baselines.") var scaleRule: ScaleRule?
  @Option(help: "LoRS adapter gradient: reordered (the paper's cheap form) or exact (the masked gradient); default: reordered for lors, exact for losa.") var gradient: LoRSGradient?
  @Option(help: ArgumentHelp("Dropout on the adapter branch's input, lora and sqft only: lors and spp merge before the product and take none (default: " + Self.perMethod({ Format.general($0.dropout) }, only: [.lora, .sqft]) + ")."))
  var dropout: Double?
  @Option(help: "Projections to adapt, comma-separated short names.") var targets = ProjectionNames.all.joined(separator: ",")
  @Option(name: .customLong("init"), help: "Initialisation: gradient (top singular vectors of the averaged gradient, from a one-pass randomized sketch, as svd_lowrank approximates it), gradient-exact (the SVD of every dense gradient: memory-heavy, for comparison) or random (kaiming input side, zero output side); default: gradient for lors, random otherwise.") var initialization: AdapterInit?
  @Option(help: "Windows whose gradient is averaged for --init gradient.") var initSamples = 128
  @OptionGroup var memory: MemoryOptions
  @Option(help: ArgumentHelp("Peak learning rate (default: " + Self.perMethod { Format.general($0.lr) } + ")."))
  var lr: Double?
  @Option(help: ArgumentHelp("Floor of the cosine schedule (default: " + Self.perMethod { Format.general($0.minLr) } + ")."))
  var minLr: Double?
  @Option(help: ArgumentHelp("Linear warmup steps (default: " + Self.perMethod { r in r.warmupRatio > 0 ? "\(Int((r.warmupRatio * 100).rounded()))% of the steps" : "\(r.warmupSteps)" } + "; losa: of each round's)."))
  var warmup: Int?
  @Option(help: ArgumentHelp("AdamW decoupled weight decay (default: " + Self.perMethod { Format.general($0.weightDecay) } + ")."))
  var weightDecay: Double?
  @Option(help: ArgumentHelp("Clip the global gradient norm to this, 0 = off (default: " + Self.perMethod { Format.general($0.maxGradNorm) } + ")."))
  var maxGradNorm: Double?
  @Option(help: "Windows per micro-batch.") var batchSize = 4
  @Option(help: "Micro-batches per optimizer step.") var gradAccum = 4
  @Option(help: "Tokens per window (capped at the model's context).") var seqLen = 512
  @Option(help: "Optimizer steps (default: from --epochs).") var steps: Int?
  @Option(help: "Passes over the data when --steps is not given.") var epochs = 3.0
  @Option(help: "Seed of the data order and of --init random.") var seed: UInt64 = 0
  @Option(help: "Write a checkpoint every N steps (0 = only at the end).") var saveEvery = 100
  @Flag(help: "Continue from the newest checkpoint in OUT (not with losa).") var resume = false
  @Option(help: "losa: the final sparsity S (unstructured).") var sparsity: Double?
  @Option(help: "losa: prune-and-tune rounds T.") var iterations = 5
  @Option(help: "losa: pruner of every round (wanda or sparsegpt).") var pruner = PruneMethod.wanda
  @Option(help: "losa: calibration text (default: --data).", completion: .file()) var calibration: String?
  @Option(help: "losa: calibration windows of --seq-len tokens (seeded by --seed).") var calibrationSamples = 32
  @Option(help: "losa: how many of them measure layer similarity.") var similaritySamples = 16
  @Option(help: "losa: the fraction of the steps the last round trains.") var finalShare = 0.6
  @OptionGroup var out: OutputOptions
  @OptionGroup var reporting: ReportOptions

  var options: FinetuneOptions {
    var o = FinetuneOptions()
    (o.method, o.rank, o.scaleRule) = (method, rank, scaleRule)
    // The method's reference recipe, then whatever the flags set.
    o.applyRecipe()
    if let alpha { o.alpha = alpha }
    if let dropout { o.dropout = dropout }
    if let lr { o.lr = lr }
    if let minLr { o.minLr = minLr } else { o.minLr = min(o.minLr, o.lr) }
    if let warmup { (o.warmup, o.warmupRatio) = (warmup, 0) }
    if let weightDecay { o.weightDecay = weightDecay }
    if let maxGradNorm { o.maxGradNorm = maxGradNorm }
    o.gradient = gradient ?? (method == .losa ? .exact : .reordered)
    o.targets = targets.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
    (o.initialization, o.initSamples) = (initialization, initSamples)
    (o.batchSize, o.gradAccum, o.seqLen, o.steps) = (batchSize, gradAccum, seqLen, steps)
    (o.epochs, o.seed, o.saveEvery, o.resume, o.overwrite) = (epochs, seed, saveEvery, resume, out.overwrite)
    return o
  }

  /// A default that differs by method, for --help: "lors 2e-05, lora 0.0001, ...".
  static func perMethod(_ value: (MethodRecipe) -> String, only: [AdapterMethod] = AdapterMethod.allCases) -> String {
    only.map { "\($0.rawValue) \(value(MethodRecipe.of($0)))" }.joined(separator: ", ")
  }

  var losa: LoSAOptions {
    var l = LoSAOptions(sparsity: sparsity ?? 0)
    (l.iterations, l.pruner, l.calibration, l.calibrationSamples) = (iterations, pruner, calibration, calibrationSamples)
    (l.similaritySamples, l.finalShare) = (similaritySamples, finalShare)
    return l
  }

  func validate() throws {
    do { try options.check() } catch { throw ValidationError("\(error)") }
    if method == .losa {
      guard sparsity != nil else { throw ValidationError("--method losa needs --sparsity S") }
      do { try losa.check(rank: rank) } catch { throw ValidationError("\(error)") }
      if resume { throw ValidationError("--resume is not supported for --method losa") }
    } else if sparsity != nil {
      throw ValidationError("--sparsity applies to --method losa (prune with espalier prune for the other methods)")
    }
    // Under MPI rank 0 alone owns OUT (another rank may look after rank 0 has created it).
    if memory.planOnly || (ClusterLaunch.environmentRank ?? 0) != 0 { return }
    let exists = FileManager.default.fileExists(atPath: output)
    if exists && !resume && !out.overwrite { throw ValidationError("\(output) exists; pass --resume to continue it or --overwrite to start afresh") }
    if resume && !exists { throw ValidationError("--resume: \(output) does not exist") }
  }

  func run() throws {
    var options = self.options
    try runReportingErrors {
      let clock = Stopwatch()
      SystemMemory.returnFreedBuffers()
      options.cluster = try ClusterLaunch.start()
      let facts = try Planning.facts(model)
      let (budget, source) = memory.budget
      let plan = MemoryPlanner.finetune(
        facts, method: method, rank: rank, targets: options.targets, batch: batchSize, seqLen: min(seqLen, facts.config.maxPositionEmbeddings),
        initialization: options.resolvedInit, budget: budget, budgetSource: source,
        losa: method == .losa ? (calibrationSamples, pruner) : nil)
      guard try Planning.announce(plan, memory, json: reporting.json) else { return }
      (options.residency, options.maxMemory, options.recomputedLayers) = (plan.residency, max(1, plan.initBudget), plan.recomputedLayers)
      let progress = Progress("init: gradients", total: 0)
      let events: (FinetuneEvent) -> Void = { event in
        switch event {
        case .info(let text): Log.info(text)
        case .warning(let text): Log.warning(text)
        case .initProgress(let done, let total): progress.update(done, of: total)
        case .step(let r, let total, let rate, let left):
          Log.info("step \(r.step)/\(total)  loss \(Format.fixed(r.loss, 4))  lr \(Format.general(r.learningRate))  \(Int(rate)) tok/s  ETA \(Format.duration(left))")
        }
      }
      var losa = self.losa
      losa.calibrationMemory = budget  // the plan counted both calibration streams in memory
      let result = method == .losa
        ? try LoSA.run(modelPath: model, dataPath: data, output: output, options: options, losa: losa, events: events)
        : try Finetune.run(modelPath: model, dataPath: data, output: output, options: options, events: events)
      FinetuneSummary.print(result, output: output, seconds: clock.seconds, json: reporting.json)
    }
  }
}
