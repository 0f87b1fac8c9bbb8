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
      or JSONL with a "text" field). N:M means N zeros in every group of M input columns. The same inputs \
      and seed give byte-identical output. Exit status: 0 pruned, 2 unreadable input, 64 usage error.
      """)

  @Argument(help: "The checkpoint to prune.", completion: .file()) var model: String
  @Argument(help: "The output checkpoint directory.", completion: .directory) var output: String
  @Option(help: "magnitude, wanda or sparsegpt.") var method = "wanda"
  @Option(help: "Fraction of zeros for unstructured pruning (0 < s < 1).") var sparsity: Double?
  @Option(help: "N:M pattern instead of --sparsity: N zeros in every group of M input columns (e.g. 2:4).") var pattern: String?
  @Option(help: "Calibration text (or JSONL with \"text\"); required for wanda and sparsegpt.") var calibration: String?
  @Option(help: "Calibration windows.") var nsamples = 128
  @Option(help: "Tokens per calibration window (capped at the model's context).") var seqLen = 2048
  @Option(help: "Seed of the window sampler.") var seed: UInt64 = 0
  @Option(help: "SparseGPT damping, as a fraction of the mean Hessian diagonal (raised x10 when Cholesky fails).") var percdamp = 0.01
  @Option(help: "Prune only tensors whose name matches this regular expression.") var include: String?
  @Option(help: "Leave tensors whose name matches this regular expression.") var exclude: String?
  @Option(help: "Output dtype of floating-point tensors (f32, f16, bf16); default: the input's.") var dtype: String?
  @Option(help: "Calibration windows per block forward.") var batchSize = 4
  @Option(help: "Memory for calibration states (decimal units, e.g. 2GB); beyond it they go to a temporary file in $TMPDIR.") var maxMemory = "2GB"
  @Flag(help: "Replace OUT if it exists.") var overwrite = false
  @Flag(help: "Print a JSON report on stdout instead of the summary.") var json = false

  func validate() throws {
    guard PruneMethod(rawValue: method) != nil else { throw ValidationError("--method must be magnitude, wanda or sparsegpt") }
    guard (sparsity == nil) != (pattern == nil) else { throw ValidationError("give exactly one of --sparsity and --pattern") }
    if let sparsity, !(sparsity > 0 && sparsity < 1) { throw ValidationError("--sparsity must be between 0 and 1") }
    if let pattern { do { _ = try NMPattern(parsing: pattern) } catch { throw ValidationError("\(error)") } }
    if method != "magnitude" && calibration == nil { throw ValidationError("--method \(method) needs --calibration FILE") }
    guard nsamples >= 1, seqLen >= 2, batchSize >= 1 else { throw ValidationError("--nsamples, --seq-len and --batch-size must be positive") }
    if let dtype, DType(userName: dtype).map({ [.f32, .f16, .bf16].contains($0) }) != true {
      throw ValidationError("--dtype must be f32, f16 or bf16")
    }
    do { _ = try ByteSize.parse(maxMemory) } catch { throw ValidationError("--max-memory: \(error)") }
    for regex in [include, exclude].compactMap({ $0 }) {
      do { _ = try Regex(regex) } catch { throw ValidationError("invalid regular expression `\(regex)`") }
    }
  }

  func run() throws {
    try runReportingErrors {
      let clock = Stopwatch()
      let target: SparsityTarget = try pattern.map { .nm(try NMPattern(parsing: $0)) } ?? .unstructured(sparsity!)
      var options = PruneOptions(method: PruneMethod(rawValue: method)!, target: target)
      options.percdamp = percdamp
      options.batchSize = batchSize
      options.selects = TensorFilter(include: include, exclude: exclude).matches
      options.maxMemory = try ByteSize.parse(maxMemory)
      if let tmp = getenv("TMPDIR") { options.temporaryDirectory = String(cString: tmp) }
      let reader = try Checkpoint.open(model)
      let llama = try LlamaModel.load(model, maxPositions: seqLen)
      let length = min(seqLen, llama.config.maxPositionEmbeddings)
      var windows: [[Int32]] = []
      if let calibration, options.method != .magnitude {
        let tokens = try Tokenizer.forCheckpoint(model).encode(try Corpus.text(calibration))
        windows = try Calibration.windows(from: tokens, count: nsamples, length: length, seed: seed)
        Log.info("calibration: \(nsamples) windows of \(length) tokens (seed \(seed)) from \(tokens.count) tokens")
      }
      let progress = Progress("prune", total: llama.config.layers)
      let report = try Pruner.prune(llama, windows: windows, options: options) { done, _ in progress.update(done) }
      for warning in report.warnings { Log.warning(warning) }
      _ = try PrunedCheckpoint.write(
        llama, input: reader, report: report, method: options.method, target: target,
        dtype: dtype.flatMap { DType(userName: $0) }, to: output, options: ConvertOptions(maxShardSize: 5_000_000_000, overwrite: overwrite))
      PruneSummary.print(report, options: options, output: output, seconds: clock.seconds, json: json)
    }
  }
}
