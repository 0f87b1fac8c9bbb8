// espalier-report: training runs, their adapters' effect per layer and perplexity reports in one
// self-contained HTML file (inline SVG, no network).

import ArgumentParser
import Foundation
import Formats
import Surgery
import ToolSupport

/// `--eval LABEL=FILE`.
struct EvalArgument: ExpressibleByArgument {
  var label: String
  var file: String
  init?(argument: String) {
    guard let eq = argument.firstIndex(of: "="), eq != argument.startIndex, argument.index(after: eq) != argument.endIndex else { return nil }
    (label, file) = (String(argument[..<eq]), String(argument[argument.index(after: eq)...]))
  }
}

@main
struct ReportCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "espalier-report",
    abstract: "Write one self-contained HTML report of fine-tuning runs: loss curves, per-layer sparsity and weight change, perplexity.",
    discussion: """
      Each RUN_DIR is the --output directory of espalier finetune; its label is the directory's name. The page \
      (inline SVG and CSS, nothing fetched) holds the training loss per step of every run overlaid; per decoder \
      layer, the sparsity of the adapted projections before (the base) and after the merge (exactly what \
      espalier merge writes) and the relative change ||W' - W||_F / ||W||_F; a perplexity table; the runs' \
      settings side by side; and per run its notes and per-layer table. Each run's base is espalier.json's \
      base_model (tried as given, then relative to each directory above RUN_DIR; LoSA: RUN_DIR/base), or --base; \
      the adapter is checked against it as merge checks it. Bases are read one tensor at a time. A run that has \
      no adapter yet shows its loss only; non-finite losses break its curve. Exit status: 0 written, 2 an input \
      cannot be read or does not fit its base, or OUT may not be written, 64 usage.
      """)

  @Argument(help: ArgumentHelp("Training run directories (espalier finetune --output), one or more.", valueName: "RUN_DIR"), completion: .directory)
  var runs: [String]
  @Option(name: [.customShort("o"), .customLong("output")], help: "The HTML file to write (OUT), whole or not at all; refused if it exists, unless --overwrite.", completion: .file())
  var output = "report.html"
  @Option(name: .customLong("eval"), help: ArgumentHelp(
    "A perplexity report from `espalier eval --text FILE --json`, shown as LABEL in the perplexity table; repeatable. Every eval*.json in a RUN_DIR is added too, labelled RUN/stem (none by default).",
    valueName: "LABEL=FILE")) var evals: [EvalArgument] = []
  @Option(help: "The base checkpoint of every run (default: each run's recorded base_model).", completion: .file()) var base: String?
  @Option(help: "The page's title.") var title = "Espalier report"
  @OptionGroup var out: OutputOptions
  @OptionGroup var reporting: ReportOptions

  func validate() throws {
    if FileSystem.isDirectory(output) { throw ValidationError("--output \(output) is a directory; give the report's file name") }
  }

  func run() throws {
    try runReportingErrors {
      try ClusterLaunch.refuseSeveralRanks("espalier report")
      let clock = Stopwatch()
      try OutputPath.claim(output, overwrite: out.overwrite, inputs: runs + evals.map(\.file))
      var rows = try evals.map { EvalRow(label: $0.label, file: $0.file, record: try PerplexityRecord(file: $0.file)) }
      var reports: [RunReport] = []
      for (directory, label) in zip(runs, Self.labels(runs)) {
        Log.info("report: \(label) (\(directory))")
        let progress = Progress("report: \(label): projections", total: 0)
        let report = try RunReport.collect(directory, label: label, base: base) { progress.update($0, of: $1) }
        for note in report.notes { Log.info("  note: " + note) }
        rows += report.evals.map { EvalRow(label: $0.label, file: $0.file, record: $0.record) }
        reports.append(report)
      }
      try AtomicFile.write(ReportHTML.page(title: title, runs: reports, evals: rows), to: output)
      ReportSummary.print(output: output, runs: reports, evals: rows, seconds: clock.seconds, json: reporting.json)
    }
  }

  /// Each run's directory name ("." and ".." resolved), made unique with " (2)", " (3)", ….
  static func labels(_ runs: [String]) -> [String] {
    var seen: [String: Int] = [:]
    return runs.map { path in
      let name = URL(fileURLWithPath: path).standardizedFileURL.lastPathComponent
      seen[name, default: 0] += 1
      return seen[name]! == 1 ? name : "\(name) (\(seen[name]!))"
    }
  }
}
