// Option groups shared by the executables, so every tool spells a flag the same way with the same help.

import ArgumentParser
import Formats

/// `--json`: data on stdout as one JSON object instead of the table or summary.
public struct ReportOptions: ParsableArguments {
  @Flag(help: "Print a JSON report on stdout instead of the table or summary.")
  public var json = false
  public init() {}
}

/// `--overwrite`: whether an existing OUT may be replaced.
public struct OutputOptions: ParsableArguments {
  @Flag(help: "Replace OUT if it exists.")
  public var overwrite = false
  public init() {}
}

/// `--max-shard-size` of checkpoint directories written as sharded safetensors.
public struct ShardOptions: ParsableArguments {
  @Option(help: "Largest shard of a directory output, in decimal (5GB = 5e9 bytes) or binary (GiB) units.")
  public var maxShardSize = ByteCount(argument: "5GB")!
  public init() {}
}

/// How calibration windows are drawn from a text: --nsamples windows of --seq-len tokens, seeded.
public struct CalibrationOptions: ParsableArguments {
  @Option(help: "Calibration text: a file, a directory of text files, or JSONL with a \"text\" field.", completion: .file())
  public var calibration: String?
  @Option(help: "Calibration windows.")
  public var nsamples = 128
  @Option(help: "Tokens per calibration window (capped at the model's context).")
  public var seqLen = 2048
  @Option(help: "Seed of the window sampler.")
  public var seed: UInt64 = 0
  @Option(help: "Calibration windows per block forward.")
  public var batchSize = 4
  public init() {}

  public func validate() throws {
    guard nsamples >= 1, seqLen >= 2, batchSize >= 1 else {
      throw ValidationError("--nsamples and --batch-size must be >= 1, --seq-len >= 2")
    }
  }
}

/// `--max-memory`: the budget of a tool's large working buffers.
public struct MemoryOptions: ParsableArguments {
  @Option(help: """
    Memory for the large working buffers (decimal units): past it they move to a temporary file in \
    $TMPDIR or are computed in more passes, as the discussion above says.
    """)
  public var maxMemory = ByteCount(argument: "2GB")!
  public init() {}
}
