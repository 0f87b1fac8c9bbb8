// The memory plan at a tool's front door: the model's facts from config.json (or the GGUF header), the
// plan printed on stderr before work starts, and `--plan-only`, which prints it as the result and stops.

import CMalloc
import Formats
import Surgery

#if canImport(Glibc)
  import Glibc
#endif

public enum SystemMemory {
  /// Makes the allocator give every large buffer back to the system when it is freed. glibc otherwise
  /// raises its mmap threshold after the first large free (up to 32 MB), and from then on serves and
  /// keeps such buffers on its heap: measured +160 MB of peak RSS on a SmolLM2 prune, whose blocks
  /// allocate and free tensors of a few MB each. Called first by the engine tools.
  public static func returnFreedBuffers() {
    #if canImport(Glibc)
      _ = mallopt(M_MMAP_THRESHOLD, 256 * 1024)
    #endif
  }

  /// MemAvailable from /proc/meminfo, in bytes (nil where it cannot be read).
  public static var available: Int? { MemoryLimit.available }
}

public enum Planning {
  /// What the planner needs from MODEL: config.json and its torch_dtype when it is a directory (so a
  /// plan needs no weights), else the checkpoint's own header.
  public static func facts(_ path: String) throws -> ModelFacts {
    let config = path.hasSuffix("/") ? path + "config.json" : path + "/config.json"
    if FileSystem.isDirectory(path), FileSystem.exists(config) {
      let object = try JSONFile.object(config)
      let llama = try LlamaConfig(json: object, file: config)
      let dtype = (object["torch_dtype"]?.stringValue ?? object["dtype"]?.stringValue).flatMap(DType.init(torchName:))
      if let reader = try? Checkpoint.open(path) {
        try llama.checkTensors(reader.infos, file: reader.path, configFile: config)
        return ModelFacts.of(reader, config: llama)
      }
      return ModelFacts(config: llama, storedBytes: max(1, (dtype?.bits ?? 16) / 8))
    }
    let reader = try Checkpoint.open(path)
    return ModelFacts.of(reader, config: try LlamaConfig.of(reader))
  }

  /// Prints the plan (stderr; stdout as the result with --plan-only) and refuses one that does not fit.
  /// Returns false when the tool should stop here (--plan-only).
  public static func announce(_ plan: MemoryPlan, _ options: MemoryOptions, json: Bool) throws -> Bool {
    if options.planOnly {
      if json { Output.json(plan.json) } else { for line in plan.lines { Output.line(line) } }
      if !plan.fits { throw ExitStatus.doesNotFit }
      return false
    }
    try plan.check()  // its message holds the plan
    for line in plan.lines { Log.info(line) }
    return true
  }
}
