// espalier-merge: an adapter merged into its base under the mask, streamed tensor by tensor.

import ArgumentParser
import Foundation
import Formats
import Surgery
import ToolSupport

@main
struct MergeCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "espalier-merge",
    abstract: "Merge a LoRS / SQFT / SPP (or, with --allow-densify, LoRA) adapter into its base checkpoint.",
    discussion: """
      BASE is the checkpoint the adapter was trained on (directory or GGUF file), ADAPTER a directory with \
      adapter_config.json + adapter_model.safetensors (PEFT format) and, from espalier finetune, espalier.json \
      with the method, scale and a fingerprint of the base weights. OUT is a checkpoint directory in the \
      base's dtypes, with config and tokenizer copied, written complete or not at all. The merge is computed \
      in f32: lors and sqft W' = W + (s*lora_B@lora_A) masked by W != 0, spp W' = W * (1 + s*expand(A)*b), \
      lora W' = W + s*lora_B@lora_A (dense). A kept weight that would become zero (exactly, or by underflow \
      in the cast) is set to the smallest normal number of the dtype with its sign and reported; --strict \
      fails instead. An adapter whose method, shapes or base fingerprint do not fit is refused with every \
      mismatch listed. Exit status: 0 merged, 1 the adapter does not fit the base, 2 unreadable input, 64 usage.
      """)

  @Argument(help: "The base checkpoint.", completion: .file()) var base: String
  @Argument(help: "The adapter directory.", completion: .directory) var adapter: String
  @Argument(help: "The output checkpoint directory.", completion: .directory) var output: String
  @Flag(help: "Merge a plain LoRA adapter even though it fills the base's zeros.") var allowDensify = false
  @Flag(help: "Fail when a kept weight would become zero, instead of raising it to the smallest normal.") var strict = false
  @OptionGroup var shards: ShardOptions
  @OptionGroup var out: OutputOptions
  @OptionGroup var reporting: ReportOptions

  func run() throws {
    try runReportingErrors {
      try ClusterLaunch.refuseSeveralRanks("espalier merge")
      let clock = Stopwatch()
      var options = MergeOptions()
      options.allowDensify = allowDensify
      options.strict = strict
      options.output = ConvertOptions(maxShardSize: shards.maxShardSize.bytes, overwrite: out.overwrite)
      let reader = try Checkpoint.open(base)
      let report: MergeReport
      do {
        report = try Merge.run(base: reader, adapterDirectory: adapter, output: output, options: options)
      } catch let error as SurgeryError {
        guard case .checkpoint(let path, let problems) = error, path == adapter else { throw error }
        Log.error("\(adapter) does not fit \(base):")
        for problem in problems { Log.error("  " + problem) }
        throw ExitStatus.checkFailed
      }
      for (name, count) in report.raised { Log.warning("\(name): \(count) kept weights raised to the smallest normal (they would have become zero)") }
      let raised = report.raised.reduce(0) { $0 + $1.count }
      if reporting.json {
        Output.json(.object(JSONObject([
          ("output", .string(output)), ("method", .string(report.method.rawValue)), ("scale", .number(String(report.scale))),
          ("merged_tensors", .number(String(report.mergedTensors))), ("raised_weights", .number(String(raised))),
          ("files", .array(report.files.map { .string($0) })), ("seconds", .number(Format.fixed(clock.seconds, 2))),
        ])))
      } else {
        Output.line("merged \(report.mergedTensors) \(report.method.rawValue) adapters (scale \(report.scale)) into \(base) -> \(output)")
        Output.line("raised kept weights: \(raised)  time: \(Format.fixed(clock.seconds, 1)) s")
      }
    }
  }
}
