// espalier-convert: any checkpoint (safetensors file or directory, GGUF, HDF5) to safetensors or HDF5.

import ArgumentParser
import Formats
import ToolSupport

@main
struct ConvertCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "espalier-convert",
    abstract: "Convert a checkpoint between safetensors, GGUF and HDF5, optionally changing its dtype.",
    discussion: """
      IN is a .safetensors file, a checkpoint directory, a .gguf file or an HDF5 file (recognised by \
      content). OUT decides the output: a name ending in .safetensors is one file, .h5/.hdf5 one HDF5 \
      file, .gguf a GGUF file for llama.cpp, anything else a checkpoint directory (sharded safetensors with model.safetensors.index.json, \
      plus config.json, generation_config.json and tokenizer files, copied or made from GGUF metadata). \
      GGUF tensors get HF names and torch order, quantised ones are dequantised to f32, and the Q/K row \
      permutation of llama.cpp's converter is undone. A .gguf output is written as llama.cpp's converter \
      writes one (Llama models): GGUF names, the Q/K permutation, norms in F32, the tokenizer and chat \
      template as metadata, and the 2-D weights in --dtype (f32, f16, bf16, q8_0, q4_0, q6_k; a matrix whose \
      rows are not whole blocks falls back to q8_0 for q6_k, else f16). Pruned zeros stay \
      zero in every type; a kept weight that would round to zero is nudged to the nearest non-zero value of \
      its sign and counted (--json: nudged). Tensors stream one at a time; the output appears \
      only when complete. With --compress OUT is a compressed sparse checkpoint directory: --format espalier \
      (ours: stored values zstd-compressed, masks as bitmasks or 2:4 group codes, checksums per frame and per \
      tensor; the smallest), sparse-bitmask or sparse-24-bitmask (compressed-tensors' layouts, readable by \
      compressed-tensors 0.14.0.1; legacy upstream). Without --compress the output is dense, so converting a \
      compressed checkpoint decompresses it, bit for bit. Exit status: 0 converted, 2 unreadable input or failed write, 64 usage error.
      """)

  @Argument(help: "The checkpoint to read.", completion: .file())
  var input: String

  @Argument(help: "Where to write (file or directory, see above).", completion: .file())
  var output: String

  @Option(help: """
    Dtype of floating-point tensors in the output (integers always keep theirs): keep, f32, f16, bf16; \
    for a .gguf output also q8_0, q4_0 or q6_k (keep means f32 there). For pruned models take q8_0 or \
    q6_k: at q4_0 many kept weights are nudged a whole step off zero (see the README).
    """)
  var dtype = ConvertDType.keep

  @OptionGroup var shards: ShardOptions

  @Flag(help: "Write a compressed sparse checkpoint directory (see --format).")
  var compress = false

  @Option(help: "Layout of --compress output.")
  var format = SparseFormat.espalier

  @Option(help: "zstd level of the espalier layout (1-19; higher is smaller and slower to write, not to read).")
  var level: Int = 3

  @OptionGroup var out: OutputOptions
  @OptionGroup var reporting: ReportOptions

  func validate() throws {
    guard ZstdFrames.levels.contains(level) else { throw ValidationError("--level must be in \(ZstdFrames.levels), not \(level)") }
    let gguf = output.hasSuffix(".gguf")
    if dtype.ggmlType.elementType == nil && !gguf {
      throw ValidationError("--dtype \(dtype.rawValue) is a GGUF block type: name the output *.gguf, or use f32, f16 or bf16")
    }
    if gguf && compress { throw ValidationError("--compress writes a checkpoint directory, not a .gguf file") }
  }

  func run() throws {
    try runReportingErrors {
      try ClusterLaunch.refuseSeveralRanks("espalier convert")
      if output.hasSuffix(".gguf") { return try exportGGUF() }
      var options = ConvertOptions(dtype: dtype.dtype, maxShardSize: shards.maxShardSize.bytes, overwrite: out.overwrite)
      if compress { options.compression = CompressionOptions(format: format, level: level) }
      var progress: Progress?
      let clock = Stopwatch()
      let report = try Converter.convert(input: input, output: output, options: options) { done, total in
        if progress == nil { progress = Progress("convert", total: total) }
        progress?.update(done)
      }
      for note in report.notes { Log.info("note: \(note)") }
      ConvertSummary.print(report, seconds: clock.seconds, json: reporting.json)
    }
  }

  /// OUT is a .gguf: the checkpoint as llama.cpp reads it (GGUFExport).
  func exportGGUF() throws {
    let reader = try Checkpoint.open(input)
    try OutputPath.claim(output, overwrite: out.overwrite, inputs: [input])
    var progress: Progress?
    let clock = Stopwatch()
    let report = try GGUFExport.export(reader, to: output, type: dtype.ggmlType) { done, total in
      if progress == nil { progress = Progress("convert", total: total) }
      progress?.update(done)
    }
    for note in report.notes { Log.info("note: \(note)") }
    ConvertSummary.printGGUF(report, input: input, output: output, type: dtype.ggmlType, seconds: clock.seconds, json: reporting.json)
  }
}
