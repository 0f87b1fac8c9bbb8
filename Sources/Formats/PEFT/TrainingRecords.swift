// A training run's directory read back (espalier report): the step log, espalier.json and the settings
// of the run, whether the final adapter exists, and the perplexity reports (espalier eval --json) kept
// beside it. Read leniently where a run may still be going: a log line that does not parse (the one a
// running or killed run is writing) is counted, not fatal, and a run without its adapter yet has its
// settings from the newest checkpoint.

/// One line of train_log.jsonl (TrainingCheckpoint.logEntry writes it).
public struct TrainingLogEntry: Equatable, Sendable {
  public var step: Int
  /// NaN when the line has no number for it: a non-finite loss is written as JSON null.
  public var loss: Double
  public var learningRate: Double?
  public var gradNorm: Double?
  public var tokens: Int?
  public var seconds: Double?
  /// Seconds since the run started when this step ended.
  public var elapsed: Double?
}

public struct TrainingLog: Equatable, Sendable {
  public var entries: [TrainingLogEntry] = []
  /// 1-based numbers of the non-empty lines that are not a JSON object with an integer "step".
  public var unreadableLines: [Int] = []
}

/// What a run directory holds.
public struct TrainingRunFiles: Sendable {
  public var directory: String
  /// espalier.json (written when the run ends), or nil.
  public var record: JSONObject?
  /// The run's settings: espalier.json's "settings", else the newest checkpoint's "run", else empty.
  public var settings: JSONObject
  /// nil when the directory has no train_log.jsonl.
  public var log: TrainingLog?
  /// adapter_config.json, when the final adapter is there.
  public var adapterConfig: PEFTAdapterConfig?
  /// Whether adapter_model.safetensors is there.
  public var hasAdapterWeights: Bool
  /// The `eval*.json` files in the directory, sorted by name.
  public var evalFiles: [String]

  /// The base checkpoint as the run recorded it: espalier.json's base_model, else the adapter config's
  /// base_model_name_or_path (nil when neither names one).
  public var recordedBase: String? {
    let recorded = record?["base_model"]?.stringValue ?? adapterConfig?.baseModel
    return recorded.flatMap { $0.isEmpty ? nil : $0 }
  }

  /// The method (espalier.json, or the settings); nil for a plain PEFT adapter.
  public var method: String? { record?["method"]?.stringValue ?? settings["method"]?.stringValue }
}

extension TrainingStore {
  /// The step log, or nil when there is none.
  public func readLog() throws(FormatError) -> TrainingLog? {
    guard FileSystem.exists(logPath) else { return nil }
    let mapped = try MappedFile(path: logPath)
    var log = TrainingLog()
    mapped.withBytes { bytes in
      var (start, lineNumber) = (0, 0)
      while start < bytes.count {
        var end = start
        while end < bytes.count && bytes[end] != 0x0A { end += 1 }
        lineNumber += 1
        let line = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
        start = end + 1
        guard line.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { continue }
        guard let o = try? JSONParser.parse(line).objectValue, let step = o["step"]?.intValue else {
          log.unreadableLines.append(lineNumber)
          continue
        }
        log.entries.append(
          TrainingLogEntry(
            step: step, loss: o["loss"]?.doubleValue ?? .nan, learningRate: o["lr"]?.doubleValue,
            gradNorm: o["grad_norm"]?.doubleValue, tokens: o["tokens"]?.intValue, seconds: o["seconds"]?.doubleValue,
            elapsed: o["elapsed"]?.doubleValue))
      }
    }
    return log
  }

  /// Reads what the directory holds; throws when it is no training run at all (none of espalier.json,
  /// train_log.jsonl, adapter_config.json, checkpoints/), or when a file that is there does not parse.
  public func readRun() throws(FormatError) -> TrainingRunFiles {
    guard FileSystem.isDirectory(directory) else { throw .io(file: directory, reason: "is not a directory (expected the output directory of espalier finetune)") }
    let record = try EspalierAdapterRecord.exists(directory) ? JSONFile.object(directory + "/" + EspalierAdapterRecord.fileName) : nil
    let configPath = directory + "/" + PEFTAdapter.configName
    let adapterConfig = FileSystem.exists(configPath) ? try PEFTAdapter.readConfig(directory) : nil
    var settings = record?["settings"]?.objectValue
    if settings == nil, let checkpoint = latestCheckpoint(), FileSystem.exists(checkpoint + "/" + Self.stateName) {
      settings = try checkpointState(checkpoint)["run"]?.objectValue
    }
    let log = try readLog()
    guard record != nil || adapterConfig != nil || log != nil || FileSystem.isDirectory(checkpoints) else {
      throw .io(file: directory, reason: "is not a training run: none of espalier.json, train_log.jsonl, adapter_config.json or checkpoints/ is there")
    }
    let names = try FileSystem.list(directory)
    let evals = names.filter { $0.hasPrefix("eval") && $0.hasSuffix(".json") }.sorted()
    return TrainingRunFiles(
      directory: directory, record: record, settings: settings ?? JSONObject(), log: log, adapterConfig: adapterConfig,
      hasAdapterWeights: FileSystem.exists(directory + "/" + PEFTAdapter.weightsName), evalFiles: evals.map { directory + "/" + $0 })
  }
}

extension EspalierAdapterRecord {
  static func exists(_ directory: String) -> Bool { FileSystem.exists(directory + "/" + fileName) }
}

/// A perplexity report as `espalier eval --text FILE --json` writes it. A non-finite nll or perplexity is
/// written as null and read back as NaN.
public struct PerplexityRecord: Equatable, Sendable {
  public var windows: Int?
  public var seqLen: Int?
  /// Tokens scored.
  public var tokens: Int?
  public var nll: Double
  public var perplexity: Double
  public var seconds: Double?

  /// Throws when the file is not a JSON object with "perplexity" or "nll" (a multiple-choice report,
  /// say: its keys are acc and acc_norm).
  public init(file: String) throws(FormatError) {
    let o = try JSONFile.object(file)
    guard o["perplexity"] != nil || o["nll"] != nil else {
      throw .io(file: file, reason: "is not a perplexity report (no \"perplexity\" or \"nll\"; expected the output of espalier eval --text FILE --json)")
    }
    windows = o["windows"]?.intValue
    seqLen = o["seq_len"]?.intValue
    tokens = o["tokens"]?.intValue
    nll = o["nll"]?.doubleValue ?? .nan
    perplexity = o["perplexity"]?.doubleValue ?? .nan
    seconds = o["seconds"]?.doubleValue
  }
}
