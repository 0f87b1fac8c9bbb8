// espalier-verify: the CI gate. Integrity, sparsity, and preservation against a base (and an adapter).

import ArgumentParser
import Formats
import Surgery
import ToolSupport

@main
struct VerifyCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "espalier-verify",
    abstract: "Check that a checkpoint is whole, as sparse as required, and kept the base's sparsity pattern.",
    discussion: """
      MODEL is any checkpoint espalier reads (safetensors file or directory, compressed sparse checkpoints \
      included, GGUF, HDF5). Checks: every tensor decodes (compressed checkpoints: frame and tensor \
      checksums); names, shapes and dtypes agree with config.json; no NaN/Inf. Sparsity is counted on the \
      projection weights (model.layers.*_proj.weight; -0.0 is zero): --sparsity sets a minimum for their \
      global ratio, --pattern N:M requires at least N zeros in every group of M. With --base, every projection \
      must have exactly the base's zeros (none filled; none new unless --allow-new-zeros) and every other \
      tensor must be byte-identical. With --adapter (and --base), the adapted weights must equal the base merged \
      with the adapter within half an ulp of their dtype, and all other tensors must be byte-identical. \
      Tensors are checked in parallel, one per core. --junit FILE also writes the checks as a JUnit XML \
      report for CI test-result views (examples/ci/ has a GitHub Actions workflow and a GitLab CI job). Exit status: 0 every check passed, 1 a check failed \
      (an adapter that does not fit the base included), 2 an input could not be read, 64 usage error.
      """)

  @Argument(help: "The checkpoint to verify.", completion: .file()) var model: String
  @Option(help: "The checkpoint MODEL was derived from (pruned base, or the base an adapter was merged into).", completion: .file())
  var base: String?
  @Option(help: "The adapter directory merged into --base to give MODEL.", completion: .directory) var adapter: String?
  @Option(help: "Minimum global sparsity of the projection weights, a fraction (e.g. 0.5); no minimum by default.")
  var sparsity: Double?
  @Option(help: "Require N:M in every projection weight: at least N zeros in each group of M (e.g. 2:4).") var pattern: NMPattern?
  @Flag(help: "Let projection weights have zeros where the base has values.") var allowNewZeros = false
  @Flag(help: "Do not fail on NaN or Inf values.") var allowNonfinite = false
  @Flag(help: "List every tensor in the table, not only projections and failures.") var all = false
  @Option(help: "Also write a JUnit XML report to FILE, a test case per check (per tensor and for the checkpoint), which CI systems show as test results; rewritten on every run (none by default).", completion: .file())
  var junit: String?
  @OptionGroup var reporting: ReportOptions

  func validate() throws {
    if let sparsity, !(0...1).contains(sparsity) { throw ValidationError("--sparsity is a fraction in [0, 1], not \(sparsity)") }
    if adapter != nil && base == nil { throw ValidationError("--adapter needs --base (the checkpoint the adapter was merged into)") }
    if let junit {
      let inputs = [model, base, adapter].compactMap { $0 }
      if FileSystem.isDirectory(junit) { throw ValidationError("--junit \(junit) is a directory; give the report's file name") }
      do { try OutputPath.refuseInputs(junit, inputs, replacing: true) } catch { throw ValidationError("--junit: \(error)") }
    }
  }

  func run() throws {
    var options = VerifyOptions()
    options.minSparsity = sparsity
    options.pattern = pattern
    options.allowNewZeros = allowNewZeros
    options.allowNonfinite = allowNonfinite
    var verdict: VerifyReport?
    let clock = Stopwatch()
    try runReportingErrors {
      let reader = try Checkpoint.open(model)
      let baseReader = try base.map { try Checkpoint.open($0) }
      let progress = Progress("verify", total: reader.infos.count)
      do {
        verdict = try Verifier.verify(model: reader, base: baseReader, adapterDirectory: adapter, options: options) { done, _ in
          progress.update(done)
        }
      } catch let error as SurgeryError {
        guard case .checkpoint(let path, let problems) = error, let adapter, path == adapter else { throw error }
        Log.error("\(adapter) does not fit \(base ?? ""), so MODEL cannot be its merge:")
        for problem in problems { Log.error("  " + problem) }
        throw ExitStatus.checkFailed
      }
    }
    guard let verdict else { return }
    let seconds = clock.seconds
    if reporting.json { Output.json(VerifyOutput.json(verdict, seconds: seconds)) } else { VerifyOutput.print(verdict, all: all, seconds: seconds) }
    if let junit {
      try runReportingErrors { try AtomicFile.write(VerifyJUnit.xml(verdict, seconds: seconds), to: junit) }
    }
    if !verdict.passed {
      // The report above is data (stdout, often captured to a file); the reasons also go to stderr, where
      // a CI log or a shell pipeline shows them.
      let reasons = verdict.failures + verdict.tensors.flatMap { v in v.failures.map { "`\(v.info.name)`: \($0)" } }
      Log.error("\(model) failed verification (\(reasons.count) problem\(reasons.count == 1 ? "" : "s")):")
      for reason in reasons.prefix(10) { Log.info("  " + reason) }
      if reasons.count > 10 { Log.info("  ... and \(reasons.count - 10) more (the report on stdout lists them all)") }
      throw ExitStatus.checkFailed
    }
  }
}
