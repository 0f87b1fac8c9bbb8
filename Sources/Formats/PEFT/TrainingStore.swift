// What a fine-tuning run keeps in its output directory OUT:
//   checkpoints/step-NNNNNN/  adapter_state.safetensors (the adapters and the optimizer's moments, f32)
//                             trainer_state.json (step, data position, optimizer step and the run's settings)
//   train_log.jsonl           one JSON object per step
//   adapter_model.safetensors + adapter_config.json (PEFT format) + espalier.json, at the end
//   base/                     LoSA only: the pruned base the adapter belongs to (an ordinary checkpoint),
//                             built in .losa-work/ iteration by iteration, and losa.json, its record
// Every file and checkpoint directory is written under a temporary name and renamed; the three adapter
// files replace earlier ones together. What the tensors and settings mean is Surgery's (Adapt/Finetune).

#if canImport(Glibc)
  import Glibc
#endif

public struct TrainingStore: Sendable {
  public let directory: String
  public init(directory: String) { self.directory = directory }

  public var checkpoints: String { directory + "/checkpoints" }
  public var logPath: String { directory + "/train_log.jsonl" }
  /// LoSA's final pruned base, its per-iteration checkpoints while it runs, and its record.
  public var losaBase: String { directory + "/base" }
  public var losaWork: String { directory + "/.losa-work" }
  public var losaRecord: String { directory + "/losa.json" }
  static let stateName = "trainer_state.json"
  static let tensorsName = "adapter_state.safetensors"

  /// Makes OUT (and checkpoints/) with an empty log; with `replacing`, first removes what an earlier run
  /// left there (checkpoints, log, adapter), and nothing else.
  public func create(replacing: Bool) throws(FormatError) {
    if replacing {
      for name in ["checkpoints", "train_log.jsonl", PEFTAdapter.configName, PEFTAdapter.weightsName, EspalierAdapterRecord.fileName, "base", ".losa-work", "losa.json"] {
        FileSystem.removeTree(directory + "/" + name)
      }
    }
    try FileSystem.makeDirectories(checkpoints)
    try AtomicFile.write("", to: logPath)
  }

  /// "step-000012".
  public static func stepName(_ step: Int) -> String {
    let digits = String(step)
    return "step-" + String(repeating: "0", count: max(0, 6 - digits.count)) + digits
  }

  /// The newest checkpoint directory, or nil when there is none.
  public func latestCheckpoint() -> String? {
    let names = (try? FileSystem.list(checkpoints)) ?? []
    let steps = names.compactMap { $0.hasPrefix("step-") ? Int($0.dropFirst(5)) : nil }
    return steps.max().map { checkpoints + "/" + Self.stepName($0) }
  }

  /// Writes checkpoints/step-N/ whole: the tensors (each loaded when it is written) and the state object.
  public func saveCheckpoint(step: Int, tensors: [TensorSource], state: JSONObject) throws(FormatError) {
    try AtomicDirectory.build(checkpoints + "/" + Self.stepName(step)) { (temporary) throws(FormatError) in
      try SafetensorsWriter.write(tensors, to: temporary + "/" + Self.tensorsName)
      try AtomicFile.write(JSONWriter.pretty(.object(state)) + "\n", to: temporary + "/" + Self.stateName)
    }
  }

  /// The state object of a checkpoint (read before its tensors, to compare settings).
  public func checkpointState(_ checkpoint: String) throws(FormatError) -> JSONObject {
    try JSONFile.object(checkpoint + "/" + Self.stateName)
  }

  public func checkpointTensors(_ checkpoint: String) throws(FormatError) -> SafetensorsFile {
    try SafetensorsFile(path: checkpoint + "/" + Self.tensorsName)
  }

  /// Removes what a killed run left half-written (checkpoint directories and files under a temporary
  /// name whose writer no longer runs, the adapter's staging directory), so a resumed run starts clean.
  public func removeDeadPartials() {
    for (directory, names) in [(checkpoints, (try? FileSystem.list(checkpoints)) ?? []), (self.directory, (try? FileSystem.list(self.directory)) ?? [])] {
      for name in names {
        guard let pid = OutputPath.partialOwner(name), pid != getpid(), !OutputPath.isRunning(pid) else { continue }
        FileSystem.removeTree(directory + "/" + name)
      }
    }
    FileSystem.removeTree(directory + "/.adapter")
  }

  /// Appends one compact JSON line to the step log.
  public func appendLog(_ entry: JSONObject) throws(FormatError) {
    try FileSystem.append(JSONWriter.compact(.object(entry)) + "\n", to: logPath)
  }

  /// Drops log lines past `step` (written after the checkpoint a run resumes from), and any line a
  /// killed run left half-written.
  public func truncateLog(afterStep step: Int) throws(FormatError) {
    let text = (try? MappedFile(path: logPath))?.withBytes { String(decoding: $0, as: UTF8.self) } ?? ""
    let kept = text.split(separator: "\n").filter { line in
      guard let o = try? JSONParser.parse(Array(line.utf8)).objectValue, let s = o["step"]?.intValue else { return false }
      return s <= step
    }
    try AtomicFile.write(kept.map { $0 + "\n" }.joined(), to: logPath)
  }

  /// Writes the final PEFT adapter and espalier.json into OUT, replacing earlier ones together: built in
  /// a sibling directory, then moved in.
  public func writeAdapter(_ tensors: [TensorSource], config: PEFTAdapterConfig, record: JSONObject) throws(FormatError) {
    let staging = directory + "/.adapter"
    try PEFTAdapter.write(tensors, config: config, extra: [.json(EspalierAdapterRecord.fileName, record)], to: staging)
    defer { FileSystem.removeTree(staging) }
    for name in [PEFTAdapter.weightsName, PEFTAdapter.configName, EspalierAdapterRecord.fileName] {
      guard rename(staging + "/" + name, directory + "/" + name) == 0 else {
        throw .io(file: directory + "/" + name, reason: "cannot move into place: \(systemErrorText())")
      }
    }
  }
}
