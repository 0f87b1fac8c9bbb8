// espalier-inspect: list a checkpoint's tensors with sizes, sparsity and N:M conformance.

import ArgumentParser
import Formats
import Surgery
import ToolSupport

@main
struct InspectCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "espalier-inspect",
    abstract: "List the tensors of a checkpoint with their sizes, sparsity and N:M conformance.",
    discussion: """
      PATH is a .safetensors file, a checkpoint directory (model.safetensors, or shards with \
      model.safetensors.index.json), a GGUF file (tensors shown dequantised, under HF names) or an HDF5 \
      file. Sparsity counts exact zeros (-0.0 is zero). Reads one tensor at a \
      time, so memory stays at the size of the largest tensor. Exit status: 0 read, 2 unreadable input.
      """)

  @Argument(help: "A .safetensors file, a checkpoint directory, a .gguf or an HDF5 file.", completion: .file())
  var path: String

  @Option(help: "Check N:M conformance: at least N zeros in every group of M along the last dimension (e.g. 2:4).")
  var pattern: NMPattern?

  @Flag(help: "Read headers only: skip sparsity and pattern checks (fast on any size).")
  var headersOnly = false

  @OptionGroup var reporting: ReportOptions

  func validate() throws {
    if headersOnly && pattern != nil { throw ValidationError("--pattern needs the tensor data; drop --headers-only") }
  }

  func run() throws {
    try runReportingErrors {
      let checkpoint = try Checkpoint.open(path)
      let progress = Progress("inspect", total: checkpoint.infos.count)
      let report = try Inspector.inspect(checkpoint, pattern: pattern, readData: !headersOnly) { done, _ in
        progress.update(done)
      }
      if reporting.json { Output.json(InspectReport.json(report)) } else { InspectReport.printTable(report) }
    }
  }
}
