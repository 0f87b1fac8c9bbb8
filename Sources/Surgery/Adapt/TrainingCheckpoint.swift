// What Finetune hands to Formats' TrainingStore: a trainer's state as checkpoint tensors and JSON (and
// back on resume), the final adapters under PEFT's names, and one line of the step log.

import Formats

/// A trainer's state as checkpoint tensors and JSON, and back: the adapters, then AdamW's two moments
/// ("adamw.m.", "adamw.v."), each laid out like the adapter arena.
enum TrainingCheckpoint {
  static let prefixes = ["", "adamw.m.", "adamw.v."]

  /// The trainer's adapters and moments as sources that copy one tensor from the live arenas when the
  /// writer asks for it: saving holds one tensor, not three arena copies (the memory plan counts on it).
  static func sources(_ trainer: Trainer) -> [TensorSource] {
    let layout = trainer.adapters.params.layout
    let params = UnsafeBufferPointer(start: UnsafePointer(trainer.adapters.params.base), count: layout.totalCount)
    let (m, v) = (trainer.optimizer.m, trainer.optimizer.v)
    var sources: [TensorSource] = []
    for (k, prefix) in prefixes.enumerated() {
      for entry in layout.entries {
        let info = TensorInfo(name: prefix + entry.name, dtype: .f32, shape: entry.shape)
        let range = entry.offset..<(entry.offset + entry.count)
        sources.append(TensorSource(info: info) {
          func tensor(_ values: UnsafeBufferPointer<Float>) throws -> Tensor {
            try Tensor(name: info.name, shape: info.shape, float32: UnsafeBufferPointer(rebasing: values[range]))
          }
          switch k {
          case 0: return try withExtendedLifetime(trainer) { try tensor(params) }
          case 1: return try m.withUnsafeBufferPointer(tensor)
          default: return try v.withUnsafeBufferPointer(tensor)
          }
        })
      }
    }
    return sources
  }

  static func stateObject(_ trainer: Trainer, settings: FinetuneSettings) -> JSONObject {
    JSONObject([
      ("step", .number(String(trainer.step))), ("epoch", .number(String(trainer.cursor.epoch))),
      ("index", .number(String(trainer.cursor.index))), ("adam_step", .number(String(trainer.optimizer.step))),
      ("data_order", .string("epoch e visits the windows in the Fisher-Yates permutation seeded by (seed, e)")),
      ("run", settings.json),
    ])
  }

  static func state(_ o: JSONObject, _ file: SafetensorsFile, layout: ParamLayout, path: String) throws(FormatError) -> TrainingState {
    guard let step = o["step"]?.intValue, let epoch = o["epoch"]?.intValue, let index = o["index"]?.intValue, let adamStep = o["adam_step"]?.intValue else {
      throw .io(file: path, reason: "trainer_state.json is missing step, epoch, index or adam_step")
    }
    var arrays = [[Float]](repeating: [Float](repeating: 0, count: layout.totalCount), count: prefixes.count)
    for (k, prefix) in prefixes.enumerated() {
      for entry in layout.entries {
        let values = try file.tensor(prefix + entry.name).float32()
        guard values.count == entry.count else {
          throw .io(file: path, reason: "tensor `\(prefix + entry.name)` has \(values.count) values, expected \(entry.count)")
        }
        arrays[k].replaceSubrange(entry.offset..<(entry.offset + entry.count), with: values)
      }
    }
    return TrainingState(step: step, cursor: DataCursor(epoch: epoch, index: index), params: arrays[0], adamStep: adamStep, m: arrays[1], v: arrays[2])
  }

  /// The adapters under PEFT's tensor names, each copied from the arena when it is written.
  static func peftSources(_ adapters: AdapterSet) -> [TensorSource] {
    adapters.peftNames.map { (peft, name) in
      let entry = adapters.params.layout.entry(name)!
      return TensorSource(info: TensorInfo(name: peft, dtype: .f32, shape: entry.shape)) {
        try withExtendedLifetime(adapters) {
          try Tensor(name: peft, shape: entry.shape, float32: UnsafeBufferPointer(start: adapters.params.base + entry.offset, count: entry.count))
        }
      }
    }
  }

  /// One line of train_log.jsonl.
  static func logEntry(_ r: StepRecord, elapsed: Double) -> JSONObject {
    func fixed(_ v: Double, _ digits: Int) -> JSONValue {
      var scale = 1.0
      for _ in 0..<digits { scale *= 10 }
      return .number(String((v * scale).rounded() / scale))
    }
    var entry = JSONObject([
      ("step", .number(String(r.step))), ("loss", .number(String(r.loss))), ("lr", .number(String(r.learningRate))),
      ("grad_norm", .number(String(r.gradNorm))), ("tokens", .number(String(r.tokens))),
      ("target_tokens", .number(String(r.targetTokens))), ("seconds", fixed(r.seconds, 4)),
      ("tokens_per_s", fixed(Double(r.tokens) / max(r.seconds, 1e-9), 1)), ("elapsed", fixed(elapsed, 2)),
    ])
    // Under MPI (rank 0's view): the step's time in collectives and the bytes they reduced.
    if r.collectiveBytes > 0 {
      entry["collective_seconds"] = fixed(r.collectiveSeconds, 5)
      entry["collective_bytes"] = .number(String(r.collectiveBytes))
    }
    return entry
  }
}
