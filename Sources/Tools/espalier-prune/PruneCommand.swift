// espalier-prune: magnitude, Wanda or SparseGPT masks, unstructured or N:M, calibrated layer by layer.

import ArgumentParser
import Formats
import Surgery
import ToolSupport

#if canImport(Glibc)
  import Glibc
#endif

@main
struct PruneCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "espalier-prune",
    abstract: "Prune the projections of a Llama-family checkpoint with magnitude, Wanda or SparseGPT.",
    discussion: """
      MODEL is a checkpoint directory or a GGUF file; OUT a checkpoint directory, written complete or not \
      at all (same dtype as the input unless --dtype), with config and tokenizer copied, and the method, \
      pattern and per-tensor sparsity in the safetensors metadata and in OUT/sparsity.json. The seven \
      projections of every block are pruned (embeddings, norms and lm_head never), narrowed by --include \
      and --exclude (regular expressions on tensor names). Wanda and SparseGPT are calibrated layer by \
      layer on --nsamples windows of --seq-len tokens drawn with --seed from --calibration (a text file, \
      a directory of them, or JSONL with a "text" field). N:M means N zeros in every group of M input \
      columns. The same inputs and seed give byte-identical output, whatever the memory plan. \
      Layerwise sparsity (unstructured only): --profile owl first runs the calibration windows through \
      the dense model and gives blocks whose Wanda scores |W|·‖X‖ hold more outliers (above --owl-m \
      times their mean) lower sparsity, within ±--owl-lambda around --sparsity and averaging to it (OWL); \
      --layer-sparsity FILE replays the rates of such a run (OUT/layer_sparsity.json, or LoSA's \
      losa.json). The rates pruned to are written to OUT/layer_sparsity.json. \
      Memory: the plan is printed first; a model larger than --max-memory is pruned one block at a time \
      from the checkpoint, each block written as soon as it is pruned. Exit status: 0 pruned, 2 unreadable \
      input, 3 the memory plan does not fit, 64 usage error.
      """)

  @Argument(help: "The checkpoint to prune.", completion: .file()) var model: String
  @Argument(help: "The output checkpoint directory.", completion: .directory) var output: String
  @Option(help: "Pruning method; wanda and sparsegpt need --calibration.") var method = PruneMethod.wanda
  @Option(help: "Fraction of zeros for unstructured pruning (0 < s < 1).") var sparsity: Double?
  @Option(help: "N:M pattern instead of --sparsity: N zeros in every group of M input columns (e.g. 2:4).") var pattern: NMPattern?
  @Option(help: "Sparsity across blocks: uniform (every block at --sparsity) or owl (outlier-weighted, needs --calibration).")
  var profile = SparsityProfile.uniform
  @Option(help: "OWL's outlier threshold M: a score is an outlier above M times its block's mean score.") var owlM = 5.0
  @Option(help: "OWL's λ: block sparsities lie within ±λ around --sparsity.") var owlLambda = 0.08
  @Option(
    help: "Per-block sparsities from a JSON file with \"rates\" (layer_sparsity.json of an earlier run, or LoSA's losa.json), instead of --sparsity.",
    completion: .file())
  var layerSparsity: String?
  @OptionGroup var calibration: CalibrationOptions
  @Option(help: "SparseGPT damping, as a fraction of the mean Hessian diagonal (raised x10 when Cholesky fails).") var percdamp = 0.01
  @Option(help: "Prune only tensors whose name matches this regular expression.") var include: String?
  @Option(help: "Leave tensors whose name matches this regular expression.") var exclude: String?
  @Option(help: "Output dtype of floating-point tensors (keep: the input's).") var dtype = OutputDType.keep
  @OptionGroup var memory: MemoryOptions
  @OptionGroup var out: OutputOptions
  @OptionGroup var shards: ShardOptions
  @OptionGroup var reporting: ReportOptions

  func validate() throws {
    if layerSparsity != nil {
      guard sparsity == nil, pattern == nil, profile == .uniform else {
        throw ValidationError("--layer-sparsity gives every block's sparsity: leave out --sparsity, --pattern and --profile")
      }
    } else {
      guard (sparsity == nil) != (pattern == nil) else { throw ValidationError("give exactly one of --sparsity and --pattern") }
    }
    if profile == .owl {
      guard pattern == nil else { throw ValidationError("--profile owl needs --sparsity (an unstructured target), not --pattern") }
      guard method != .magnitude else { throw ValidationError("--profile owl scores outliers with calibration activations: use --method wanda or sparsegpt") }
      guard owlM > 0, owlLambda > 0 && owlLambda < 0.5 else { throw ValidationError("--owl-m must be > 0 and --owl-lambda in (0, 0.5)") }
      if calibration.calibration == nil && !memory.planOnly { throw ValidationError("--profile owl needs --calibration FILE") }
    }
    if let sparsity, !(sparsity > 0 && sparsity < 1) { throw ValidationError("--sparsity must be between 0 and 1") }
    if method != .magnitude && calibration.calibration == nil && !memory.planOnly { throw ValidationError("--method \(method.rawValue) needs --calibration FILE") }
    for regex in [include, exclude].compactMap({ $0 }) {
      do { _ = try Regex(regex) } catch { throw ValidationError("invalid regular expression `\(regex)`") }
    }
  }

  func run() throws {
    try runReportingErrors {
      let clock = Stopwatch()
      SystemMemory.returnFreedBuffers()
      let cluster = try ClusterLaunch.start()
      let c = calibration
      let facts = try Planning.facts(model)
      let layers = try layerSparsity.map { (path) throws(SurgeryError) in try LayerSparsity.read(path, layers: facts.config.layers) }
      let target: SparsityTarget = pattern.map { .nm($0) } ?? .unstructured(sparsity ?? layers!.target)
      let length = min(c.seqLen, facts.config.maxPositionEmbeddings)
      let (budget, source) = memory.budget
      let plan = MemoryPlanner.prune(
        facts, method: method, windows: method == .magnitude ? 0 : cluster.largestShare(of: c.nsamples, inGroupsOf: c.batchSize), seqLen: length, batch: c.batchSize,
        outputBytes: dtype.dtype.map { $0.bits / 8 } ?? facts.storedBytes, budget: budget, budgetSource: source)
      guard try Planning.announce(plan, memory, json: reporting.json) else { return }
      var options = PruneOptions(method: method, target: target)
      options.cluster = cluster
      options.percdamp = percdamp
      options.batchSize = plan.batchSize
      // Every rank forms the same batches: rank 0's plan decides (each rank's shares are computed from it).
      try cluster.agree(&options.batchSize)
      options.selects = TensorFilter(include: include, exclude: exclude).matches
      options.maxMemory = plan.hiddenBudget
      options.layerSparsity = layers
      if profile == .owl {
        var owl = OWLSettings()
        (owl.m, owl.lambda) = (owlM, owlLambda)
        options.owl = owl
      }
      if let tmp = getenv("TMPDIR") { options.temporaryDirectory = String(cString: tmp) }
      let reader = try Checkpoint.open(model)
      let llama = try LlamaModel.load(model, maxPositions: c.seqLen, residency: plan.residency)
      var windows: [[Int32]] = []
      if let text = c.calibration, options.method != .magnitude {
        let tokens = try Tokenizer.forCheckpoint(model).encode(try Corpus.text(text))
        windows = try Calibration.windows(from: tokens, count: c.nsamples, length: length, seed: c.seed)
        Log.info("calibration: \(c.nsamples) windows of \(length) tokens (seed \(c.seed)) from \(tokens.count) tokens")
      }
      let outliers = Progress("owl outlier ratios", total: llama.config.layers)
      let progress = Progress("prune", total: llama.config.layers)
      let (report, _) = try PrunedCheckpoint.prune(
        llama, input: reader, windows: windows, options: options, dtype: dtype.dtype, to: output,
        convert: ConvertOptions(maxShardSize: shards.maxShardSize.bytes, overwrite: out.overwrite),
        profileProgress: { done, _ in outliers.update(done) }, progress: { done, _ in progress.update(done) })
      for warning in report.warnings { Log.warning(warning) }
      PruneSummary.print(report, options: options, output: output, seconds: clock.seconds, json: reporting.json)
    }
  }
}
