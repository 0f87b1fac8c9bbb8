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

/// `--max-memory` and `--plan-only`: the memory budget of an engine tool and a look at its plan.
public struct MemoryOptions: ParsableArguments {
  @Option(help: """
    Memory budget (decimal or binary units, e.g. 4GB, 700MB). The tool prints its memory plan, picks the \
    fastest one within the budget (every weight in f32; else one block at a time from the checkpoint; \
    else smaller batches, states in a temporary file in $TMPDIR) and refuses, exit 3, when none fits. \
    Default: the memory available now (MemAvailable).
    """)
  public var maxMemory: ByteCount?
  @Flag(help: "Print the memory plan, from config.json alone (no weights needed), and exit: 0 it fits, 3 it does not.")
  public var planOnly = false
  public init() {}

  /// The budget in bytes and where it came from. Under MPI --max-memory is each rank's; the default is
  /// the machine's available memory shared among the ranks on it.
  public var budget: (bytes: Int, source: String) {
    if let maxMemory { return (maxMemory.bytes, "--max-memory") }
    let (available, ranks) = (SystemMemory.available, ClusterLaunch.current?.isDistributed == true ? ClusterLaunch.ranksOnThisMachine : 1)
    let shared = ranks > 1 ? ", shared by \(ranks) ranks" : ""
    return ((available ?? 8_000_000_000) / ranks, available == nil ? "assumed: /proc/meminfo unreadable" + shared : "memory available now" + shared)
  }
}
