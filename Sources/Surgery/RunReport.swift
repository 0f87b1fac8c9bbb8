// A training run gathered for espalier report: what its directory holds (Formats' TrainingStore.readRun:
// settings, step log, the perplexity reports beside it) and what its adapter does to its base, per layer
// (AdapterEffect). A run that has no adapter yet (still training, or stopped) keeps its log and says why
// it has no per-layer numbers.

import Formats

public struct RunReport: Sendable {
  public var label: String
  public var files: TrainingRunFiles
  /// The base checkpoint the adapter was measured against (nil without an adapter).
  public var base: String?
  public var effect: AdapterEffect?
  /// What the report should say about the run (no adapter yet, unreadable log lines, skipped files).
  public var notes: [String]
  /// Perplexity reports found in the run's directory (`eval*.json`), labelled "RUN/stem".
  public var evals: [(label: String, file: String, record: PerplexityRecord)]

  /// The loss of the last logged step (NaN when it was not finite; nil with no step logged).
  public var finalLoss: Double? { files.log?.entries.last?.loss }

  /// Reads the run in `directory` and measures its adapter against its base: `base` when given, else the
  /// base the run recorded (see `baseCandidates`). Throws when the directory is no run, a file in it does
  /// not parse, no base can be found (the error names every path tried), or the adapter does not fit it.
  public static func collect(
    _ directory: String, label: String, base override: String?, progress: (Int, Int) -> Void = { _, _ in }
  ) throws(SurgeryError) -> RunReport {
    let files: TrainingRunFiles
    do { files = try TrainingStore(directory: directory).readRun() } catch { throw .format(error) }
    var report = RunReport(label: label, files: files, base: nil, effect: nil, notes: [], evals: [])
    if let log = files.log {
      if log.entries.isEmpty { report.notes.append("the step log is empty: no step finished") }
      if !log.unreadableLines.isEmpty {
        report.notes.append("\(log.unreadableLines.count) line(s) of train_log.jsonl are not a step record and were skipped (line \(log.unreadableLines.map(String.init).joined(separator: ", ")))")
      }
      let nonFinite = log.entries.filter { !$0.loss.isFinite }.map(\.step)
      if !nonFinite.isEmpty {
        report.notes.append("\(nonFinite.count) step(s) logged a non-finite loss (step \(nonFinite.prefix(10).map(String.init).joined(separator: ", "))\(nonFinite.count > 10 ? ", …" : "")); the loss curve breaks there")
      }
    } else {
      report.notes.append("no train_log.jsonl: no loss curve")
    }
    for file in files.evalFiles {
      do {
        report.evals.append((label + "/" + stem(file), file, try PerplexityRecord(file: file)))
      } catch {
        report.notes.append("\(file) skipped: \(error)")
      }
    }
    guard files.hasAdapterWeights, files.adapterConfig != nil else {
      report.notes.append("no adapter_model.safetensors + adapter_config.json yet (the run has not finished): no per-layer numbers")
      return report
    }
    let candidates = override.map { [$0] } ?? baseCandidates(files)
    guard let base = candidates.first(where: FileSystem.exists) else {
      let tried = candidates.isEmpty ? "espalier.json and adapter_config.json name no base model" : "tried " + candidates.joined(separator: ", ")
      throw .checkpoint(path: directory, problems: ["cannot find the base checkpoint of this run (\(tried)); pass --base PATH"])
    }
    report.base = base
    let reader: any CheckpointReader
    do { reader = try Checkpoint.open(base) } catch { throw .format(error) }
    report.effect = try AdapterEffect.measure(base: reader, adapterDirectory: directory, progress: progress)
    if let effect = report.effect, effect.method == .lora {
      report.notes.append("lora merges densely (W + s·B·A): the base's zeros fill, so sparsity after is lower")
    }
    let raised = report.effect?.projections.reduce(0) { $0 + $1.raised } ?? 0
    if raised > 0 { report.notes.append("\(raised) kept weights would have become zero in the merge and are raised to the smallest normal, as espalier merge does") }
    return report
  }

  /// Where the run's base may be, in order: LoSA's own `base/` in the run; the recorded path as given
  /// (relative to the working directory, as finetune was run); then, when it is relative, against each
  /// directory above the run (its parent first, up to the root), for a report made from elsewhere.
  public static func baseCandidates(_ files: TrainingRunFiles) -> [String] {
    var candidates: [String] = []
    if files.method == AdapterMethod.losa.rawValue { candidates.append(TrainingStore(directory: files.directory).losaBase) }
    guard let recorded = files.recordedBase else { return candidates }
    candidates.append(recorded)
    guard !recorded.hasPrefix("/") else { return candidates }
    let parts = FileSystem.absolute(files.directory).split(separator: "/").map(String.init)
    for k in stride(from: parts.count - 1, through: 0, by: -1) {
      candidates.append("/" + (parts[..<k] + [recorded]).joined(separator: "/"))
    }
    var seen = Set<String>()
    return candidates.filter { seen.insert($0).inserted }
  }

  static func stem(_ path: String) -> String {
    let name = path.split(separator: "/").last.map(String.init) ?? path
    return name.hasSuffix(".json") ? String(name.dropLast(5)) : name
  }
}
