// What Finetune hands to Formats' TrainingStore: a trainer's state as checkpoint tensors and JSON (and
// back on resume), the final adapters under PEFT's names, and one line of the step log.

import Formats

/// A trainer's state as checkpoint tensors and JSON, and back: the adapters, then AdamW's two moments
/// ("adamw.m.", "adamw.v."), each laid out like the adapter arena.
enum TrainingCheckpoint {
  static let prefixes = ["", "adamw.m.", "adamw.v."]

  static func tensors(_ state: TrainingState, layout: ParamLayout) throws(FormatError) -> [Tensor] {
    var tensors: [Tensor] = []
    for (prefix, values) in zip(prefixes, [state.params, state.m, state.v]) {
      for entry in layout.entries {
        tensors.append(try Tensor(name: prefix + entry.name, shape: entry.shape, float32: Array(values[entry.offset..<(entry.offset + entry.count)])))
      }
    }
    return tensors
  }

  static func stateObject(_ state: TrainingState, settings: FinetuneSettings) -> JSONObject {
    JSONObject([
      ("step", .number(String(state.step))), ("epoch", .number(String(state.cursor.epoch))),
      ("index", .number(String(state.cursor.index))), ("adam_step", .number(String(state.adamStep))),
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

  /// The adapters under PEFT's tensor names.
  static func peftTensors(_ adapters: AdapterSet) throws(FormatError) -> [Tensor] {
    var tensors: [Tensor] = []
    for (peft, name) in adapters.peftNames {
      let entry = adapters.params.layout.entry(name)!
      let values = Array(UnsafeBufferPointer(start: adapters.params.base + entry.offset, count: entry.count))
      tensors.append(try Tensor(name: peft, shape: entry.shape, float32: values))
    }
    return tensors
  }

  /// One line of train_log.jsonl.
  static func logEntry(_ r: StepRecord, elapsed: Double) -> JSONObject {
    func fixed(_ v: Double, _ digits: Int) -> JSONValue {
      var scale = 1.0
      for _ in 0..<digits { scale *= 10 }
      return .number(String((v * scale).rounded() / scale))
    }
    return JSONObject([
      ("step", .number(String(r.step))), ("loss", .number(String(r.loss))), ("lr", .number(String(r.learningRate))),
      ("grad_norm", .number(String(r.gradNorm))), ("tokens", .number(String(r.tokens))),
      ("target_tokens", .number(String(r.targetTokens))), ("seconds", fixed(r.seconds, 4)),
      ("tokens_per_s", fixed(Double(r.tokens) / max(r.seconds, 1e-9), 1)), ("elapsed", fixed(elapsed, 2)),
    ])
  }
}
