// What espalier-finetune keeps in OUT: checkpoints/step-N/ (adapter_state.safetensors with the adapters and
// AdamW moments, trainer_state.json with the step, data cursor, AdamW step and the run's settings),
// train_log.jsonl, and the final PEFT adapter + espalier.json. Every file and checkpoint directory is
// written under a temporary name and renamed.

import Foundation
import Formats
import Surgery
import ToolSupport

/// The settings a checkpoint must share with the run that resumes it.
struct RunSettings {
  var method: AdapterMethod
  var rank: Int
  var alpha: Double
  var dropout: Double
  var scaleRule: ScaleRule
  var scale: Float
  var gradient: LoRSGradient
  var targets: [String]
  var initialization: String
  var initSamples: Int
  var seqLen: Int
  var options: TrainingOptions
  var baseFingerprint: String
  var windows: Int
  var targetTokens: Int

  var fields: [(String, JSONValue)] {
    [
      ("method", .string(method.rawValue)), ("rank", .number(String(rank))), ("alpha", .number(String(alpha))), ("dropout", .number(String(dropout))),
      ("dropout", .number(String(dropout))), ("scale_rule", .string(scaleRule.rawValue)), ("scale", .number(String(scale))), ("gradient", .string(gradient.rawValue)),
      ("targets", .array(targets.map { .string($0) })), ("init", .string(initialization)), ("init_samples", .number(String(initSamples))),
      ("seq_len", .number(String(seqLen))), ("batch_size", .number(String(options.batchSize))),
      ("grad_accum", .number(String(options.gradAccum))), ("steps", .number(String(options.steps))),
      ("lr", .number(String(options.schedule.base))), ("min_lr", .number(String(options.schedule.floor))),
      ("warmup", .number(String(options.schedule.warmup))), ("weight_decay", .number(String(options.weightDecay))),
      ("max_grad_norm", .number(String(options.maxGradNorm))), ("seed", .number(String(options.seed))),
      ("base_fingerprint", .string(baseFingerprint)), ("data_windows", .number(String(windows))),
      ("data_target_tokens", .number(String(targetTokens))),
    ]
  }

  var json: JSONValue { .object(JSONObject(fields)) }

  /// "key: checkpoint X, now Y" for every field that differs.
  func differences(from saved: JSONObject) -> [String] {
    fields.compactMap { key, value in
      let old = saved[key] ?? .null
      return old == value ? nil : "\(key): checkpoint \(JSONWriter.pretty(old)), now \(JSONWriter.pretty(value))"
    }
  }
}

struct TrainingStore {
  let directory: String
  var checkpoints: String { directory + "/checkpoints" }
  var logPath: String { directory + "/train_log.jsonl" }

  func create(replacing: Bool) throws {
    let fm = FileManager.default
    if replacing && fm.fileExists(atPath: directory) {
      for name in ["checkpoints", "train_log.jsonl", PEFTAdapter.configName, PEFTAdapter.weightsName, "espalier.json"] {
        try? fm.removeItem(atPath: directory + "/" + name)
      }
    }
    try fm.createDirectory(atPath: checkpoints, withIntermediateDirectories: true)
    try AtomicFile.write("", to: logPath)
  }

  static func stepName(_ step: Int) -> String {
    let digits = String(step)
    return "step-" + String(repeating: "0", count: max(0, 6 - digits.count)) + digits
  }

  func latestCheckpoint() throws -> String? {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: checkpoints)) ?? []
    let steps = names.compactMap { $0.hasPrefix("step-") ? Int($0.dropFirst(5)) : nil }
    return steps.max().map { checkpoints + "/" + Self.stepName($0) }
  }

  func save(_ state: TrainingState, run: RunSettings, layout: ParamLayout) throws {
    var tensors: [Tensor] = []
    for (prefix, values) in [("", state.params), ("adamw.m.", state.m), ("adamw.v.", state.v)] {
      for entry in layout.entries {
        tensors.append(try Tensor(name: prefix + entry.name, shape: entry.shape, float32: Array(values[entry.offset..<(entry.offset + entry.count)])))
      }
    }
    let trainerState = JSONValue.object(JSONObject([
      ("step", .number(String(state.step))), ("epoch", .number(String(state.cursor.epoch))),
      ("index", .number(String(state.cursor.index))), ("adam_step", .number(String(state.adamStep))),
      ("data_order", .string("epoch e visits the windows in the Fisher-Yates permutation seeded by (seed, e)")),
      ("run", run.json),
    ]))
    try AtomicDirectory.build(checkpoints + "/" + Self.stepName(state.step)) { (temporary) throws(FormatError) in
      try SafetensorsWriter.write(tensors, to: temporary + "/adapter_state.safetensors")
      try AtomicFile.write(JSONWriter.pretty(trainerState) + "\n", to: temporary + "/trainer_state.json")
    }
  }

  /// The settings a checkpoint was made with (compared before its tensors are read).
  func settings(_ path: String) throws -> JSONObject {
    let statePath = path + "/trainer_state.json"
    guard let run = try MappedFile(path: statePath).withBytes({ try JSONParser.parse($0) }).objectValue?["run"]?.objectValue else {
      throw FormatError.io(file: statePath, reason: "missing \"run\"")
    }
    return run
  }

  func load(_ path: String, layout: ParamLayout) throws -> TrainingState {
    let statePath = path + "/trainer_state.json"
    guard let o = try MappedFile(path: statePath).withBytes({ try JSONParser.parse($0) }).objectValue, let step = o["step"]?.intValue, let epoch = o["epoch"]?.intValue,
      let index = o["index"]?.intValue, let adamStep = o["adam_step"]?.intValue
    else { throw FormatError.io(file: statePath, reason: "missing step, epoch, index or adam_step") }
    let file = try SafetensorsFile(path: path + "/adapter_state.safetensors")
    let count = layout.totalCount
    // The adapters, then AdamW's two moments, each laid out like the arena.
    var arrays = [[Float]](repeating: [Float](repeating: 0, count: count), count: 3)
    for (k, prefix) in ["", "adamw.m.", "adamw.v."].enumerated() {
      for entry in layout.entries {
        let values = try file.tensor(prefix + entry.name).float32()
        guard values.count == entry.count else {
          throw FormatError.io(file: path, reason: "tensor `\(prefix + entry.name)` has \(values.count) values, expected \(entry.count)")
        }
        arrays[k].replaceSubrange(entry.offset..<(entry.offset + entry.count), with: values)
      }
    }
    let (params, m, v) = (arrays[0], arrays[1], arrays[2])
    return TrainingState(step: step, cursor: DataCursor(epoch: epoch, index: index), params: params, adamStep: adamStep, m: m, v: v)
  }

  func appendLog(_ r: StepRecord, elapsed: Double) throws {
    let line = JSONWriter.compact(.object(JSONObject([
      ("step", .number(String(r.step))), ("loss", .number(String(r.loss))), ("lr", .number(String(r.learningRate))),
      ("grad_norm", .number(String(r.gradNorm))), ("tokens", .number(String(r.tokens))),
      ("target_tokens", .number(String(r.targetTokens))), ("seconds", .number(Format.fixed(r.seconds, 4))),
      ("tokens_per_s", .number(Format.fixed(Double(r.tokens) / max(r.seconds, 1e-9), 1))),
      ("elapsed", .number(Format.fixed(elapsed, 2))),
    ]))) + "\n"
    guard let handle = FileHandle(forWritingAtPath: logPath) else { throw FormatError.io(file: logPath, reason: "cannot open for appending") }
    defer { try? handle.close() }
    try handle.seekToEnd()
    try handle.write(contentsOf: Data(line.utf8))
  }

  /// Drops log lines past `step` (written after the checkpoint a run resumes from).
  func truncateLog(afterStep step: Int) throws {
    let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    let kept = text.split(separator: "\n").filter { line in
      guard let o = try? JSONParser.parse(Array(line.utf8)).objectValue, let s = o["step"]?.intValue else { return false }
      return s <= step
    }
    try AtomicFile.write(kept.map { $0 + "\n" }.joined(), to: logPath)
  }

  func writeAdapter(_ adapters: AdapterSet, run: RunSettings, baseModel: String, finalLoss: Double?) throws {
    var tensors: [Tensor] = []
    for (peft, name) in adapters.peftNames {
      let entry = adapters.params.layout.entry(name)!
      let values = Array(UnsafeBufferPointer(start: adapters.params.base + entry.offset, count: entry.count))
      tensors.append(try Tensor(name: peft, shape: entry.shape, float32: values))
    }
    let config = PEFTAdapterConfig(
      rank: adapters.method == .spp ? SPPLinear.rowBlocks : adapters.rank, alpha: run.alpha, targetModules: run.targets.sorted(),
      dropout: run.dropout, useRSLoRA: run.scaleRule == .rslora, baseModel: baseModel)
    let espalier = JSONValue.object(JSONObject([
      ("format", .string("espalier adapter 1")),
      ("method", .string(run.method.rawValue)),
      ("scale_rule", .string(run.scaleRule.rawValue)), ("scale", .number(String(run.scale))),
      ("rank", .number(String(run.rank))), ("alpha", .number(String(run.alpha))), ("gradient", .string(run.gradient.rawValue)),
      ("targets", .array(run.targets.map { .string($0) })),
      ("mask_source", .string(run.method.preservesSparsity ? "base weights: M = (W != 0) of each adapted projection" : "none (dense LoRA)")),
      ("merge", .string(Self.mergeFormula(run.method))),
      ("peft_naming", .string(Self.naming(run.method))),
      ("base_model", .string(baseModel)), ("base_fingerprint", .string(run.baseFingerprint)),
      ("steps", .number(String(run.options.steps))), ("final_loss", finalLoss.map { .number(String($0)) } ?? .null),
      ("settings", run.json),
    ]))
    let directory = self.directory
    // The three adapter files replace any previous ones together: built in a sibling directory, then moved in.
    let staging = directory + "/.adapter"
    try PEFTAdapter.write(tensors, config: config, extra: [SideFile(name: "espalier.json", content: .text(JSONWriter.pretty(espalier) + "\n"))], to: staging)
    for name in [PEFTAdapter.weightsName, PEFTAdapter.configName, "espalier.json"] {
      guard rename(staging + "/" + name, directory + "/" + name) == 0 else { throw FormatError.io(file: directory + "/" + name, reason: "cannot move into place") }
    }
    try? FileManager.default.removeItem(atPath: staging)
  }

  static func mergeFormula(_ method: AdapterMethod) -> String {
    switch method {
    case .lors: return "W' = (W + s * lora_B @ lora_A) * (W != 0)   (PEFT names; LoRS' A (out, r) is lora_B, its B (r, in) is lora_A)"
    case .sqft: return "W' = W + (s * lora_B @ lora_A) * (W != 0)"
    case .lora: return "W' = W + s * lora_B @ lora_A   (dense: fills the zeros)"
    case .spp: return "W' = W * (1 + s * repeat_interleave(lora_A, out/16, dim=0) * lora_B)   (lora_A (16, in), lora_B (out, 1))"
    }
  }

  static func naming(_ method: AdapterMethod) -> String {
    switch method {
    case .lors: return "lora_A.weight = LoRS B (r, in); lora_B.weight = LoRS A (out, r)"
    case .lora, .sqft: return "PEFT's own: lora_A.weight (r, in), lora_B.weight (out, r)"
    case .spp: return "lora_A.weight = SPP A (16, in); lora_B.weight = SPP b (out, 1); not loadable by PEFT"
    }
  }
}

enum Summary {
  static func print(output: String, run: RunSettings, steps: Int, last: StepRecord?, tokensPerSecond: Double, seconds: Double, json: Bool) {
    if json {
      Output.json(.object(JSONObject([
        ("output", .string(output)), ("method", .string(run.method.rawValue)), ("steps", .number(String(steps))),
        ("final_loss", last.map { .number(String($0.loss)) } ?? .null),
        ("tokens_per_s", .number(Format.fixed(tokensPerSecond, 1))), ("seconds", .number(Format.fixed(seconds, 2))),
        ("base_fingerprint", .string(run.baseFingerprint)),
      ])))
    } else {
      Output.line("trained \(run.method.rawValue) adapters for \(steps) steps -> \(output)")
      if let last { Output.line("final loss: \(Format.fixed(last.loss, 4))  throughput: \(Int(tokensPerSecond)) tokens/s  time: \(Format.fixed(seconds, 1)) s") }
    }
  }
}
