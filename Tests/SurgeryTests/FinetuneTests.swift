// The fine-tuning pieces against goldens from fixtures/make_finetune_goldens.py: the LoRA, SQFT and SPP
// methods on the whole 2:4-pruned tiny model (loss, every adapter gradient, the gradient at the embedding
// output, five AdamW steps), PEFT interop (a PEFT LoRA gives PEFT's logits here; a LoRS adapter saved in
// PEFT's format, merged by PEFT and re-masked, equals our merge), the Alpaca data pipeline, and the
// trainer's accumulation and resume.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

@Suite struct BaselineGoldenTests {
  static func json(_ name: String) throws -> JSONValue {
    try JSONParser.parse(Array(try Data(contentsOf: URL(fileURLWithPath: fixturePath("adapt/" + name)))))
  }

  /// The pruned tiny model with `method` adapters set from the golden init.
  static func setUp(_ method: AdapterMethod) throws -> (LlamaModel, AdapterSet, SafetensorsFile) {
    let (model, _) = try prunedTinyModel()
    let golden = try SafetensorsFile(path: fixturePath("adapt/baselines_tiny.safetensors"))
    let adapters = try AdapterSet(model: model, method: method, rank: 4, scale: ScaleRule.lora.scale(alpha: 8, rank: 4))
    #expect(adapters.scale == 2)
    for entry in adapters.params.layout.entries {
      let values = try golden.tensor("\(method.rawValue).init.\(entry.name)").float32()
      try #require(values.count == entry.count)
      (adapters.params.base + entry.offset).update(from: values, count: values.count)
    }
    adapters.attach(to: model)
    return (model, adapters, golden)
  }

  @Test(arguments: [AdapterMethod.lora, .sqft, .spp])
  func gradientsAndFiveAdamWStepsMatchTorch(method: AdapterMethod) throws {
    let (model, adapters, golden) = try Self.setUp(method)
    let m = method.rawValue
    let runner = LlamaRunner(model: model, B: 2, T: 16)
    runner.captureLayerInputGradients = true
    let tokens = try AdaptTests.ids("input_ids"), targets = try AdaptTests.ids("targets")
    let losses = try #require(try Self.json("baselines_tiny.json").objectValue?["methods"]?.objectValue?[m]?.objectValue?["losses_before_each_step"]?.arrayValue)
    let optimizer = AdamW(count: adapters.params.layout.totalCount, weightDecay: 0.01)
    for step in 0..<5 {
      adapters.zeroGrad()
      let result = try runner.forward(tokens: tokens, targets: targets, prepareBackward: true)
      try runner.backward()
      #expect(abs(Double(result.loss) - (losses[step].doubleValue ?? .nan)) < 1e-5, "\(m) loss before step \(step + 1)")
      if step == 0 {
        #expect(maxAbsDiff(runner.layerInputGradients[0], try golden.tensor("\(m).grad.layer_input.0").float32()) < 1e-5)
        for entry in adapters.grads.layout.entries {
          let ours = Array(UnsafeBufferPointer(start: adapters.grads.base + entry.offset, count: entry.count))
          let want = try golden.tensor("\(m).grad.\(entry.name)").float32()
          let scale = want.map { abs($0) }.max() ?? 1
          #expect(maxAbsDiff(ours, want) <= 1e-5 * max(1, scale), "\(m) grad \(entry.name)")
        }
      }
      optimizer.update(adapters.params.base, grads: adapters.grads.base, count: adapters.params.layout.totalCount, lr: 1e-3)
    }
    // AdamW divides by sqrt(v): where a gradient is near zero its update amplifies float32 rounding
    // differences in that gradient (up to a fraction of lr = 1e-3 per step). So almost every element must
    // agree to 1e-6, and every element to 1e-5 (1/500 of the 5·lr the adapters can move in five steps).
    var close = 0, total = 0
    for entry in adapters.params.layout.entries {
      let ours = Array(UnsafeBufferPointer(start: adapters.params.base + entry.offset, count: entry.count))
      let want = try golden.tensor("\(m).step5.\(entry.name)").float32()
      #expect(maxAbsDiff(ours, want) < 1e-5, "\(m) after step 5: \(entry.name)")
      close += zip(ours, want).filter { abs($0 - $1) <= 1e-6 }.count
      total += entry.count
    }
    #expect(Double(close) >= 0.99 * Double(total), "\(m): \(total - close) of \(total) values differ by more than 1e-6")
    // The masked methods keep exactly the base's zeros; LoRA fills them.
    for prefix in adapters.prefixes {
      let merged = try adapters.mergedWeight(prefix, model: model)
      let base = Array(UnsafeBufferPointer(start: model.weight(prefix + ".weight"), count: merged.count))
      let same = zip(merged, base).allSatisfy { ($0 == 0) == ($1 == 0) }
      #expect(same == method.preservesSparsity, "\(m) \(prefix)")
    }
  }

  @Test func sppGradientsPassFiniteDifferences() {
    // (16, 4) weight with zeros, 16 row blocks of one row; N = 3.
    var r = Random(7)
    let (out, inp, N) = (16, 4, 3)
    var w = r.array(out * inp)
    for i in stride(from: 0, to: w.count, by: 3) { w[i] = 0 }
    let x0 = r.array(N * inp), gy = r.array(N * out), a0 = r.array(16 * inp, scale: 0.5), b0 = r.array(out, scale: 0.5)
    func run(_ a: [Float], _ b: [Float], _ x: [Float]) -> (y: [Float], dx: [Float], da: [Float], db: [Float]) {
      var a = a, b = b, da = [Float](repeating: 0, count: a.count), db = [Float](repeating: 0, count: b.count)
      var y = [Float](repeating: 0, count: N * out), dx = [Float](repeating: 0, count: N * inp)
      let layer = SPPLinear(
        weight: w, bias: nil, inFeatures: inp, outFeatures: out, scale: 1.5, a: &a, b: &b, gradA: &da, gradB: &db, workspace: AdapterWorkspace())
      layer.forward(out: &y, inp: x, N: N)
      layer.backward(dinp: &dx, dout: gy, inp: x, N: N)
      return (y, dx, da, db)
    }
    let base = run(a0, b0, x0)
    var a = a0, b = b0, x = x0
    checkGradient("spp dA", x: &a, analytic: base.da, tolerance: 1e-3) { dot(run($0, b0, x0).y, gy) }
    checkGradient("spp db", x: &b, analytic: base.db, tolerance: 1e-3) { dot(run(a0, $0, x0).y, gy) }
    checkGradient("spp dx", x: &x, analytic: base.dx, tolerance: 1e-3) { dot(run(a0, b0, $0).y, gy) }
  }
}

/// fixtures/tiny-llama with the 14 projections replaced by the 2:4-pruned weights of lors_tiny.safetensors.
func prunedTinyModel() throws -> (LlamaModel, SafetensorsFile) {
  let golden = try SafetensorsFile(path: fixturePath("adapt/lors_tiny.safetensors"))
  let model = try LlamaModel.load(fixturePath("tiny-llama"))
  for e in golden.entries where e.info.name.hasPrefix("base.") {
    let values = try golden.tensor(e).float32()
    model.weight(String(e.info.name.dropFirst(5))).update(from: values, count: values.count)
  }
  return (model, golden)
}

@Suite struct PEFTInteropTests {
  @Test func peftLoRAGivesPEFTsLogits() throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    let directory = fixturePath("adapt/peft/lora")
    let config = try PEFTAdapter.readConfig(directory)
    #expect(config.rank == 4 && config.alpha == 8 && !config.useRSLoRA && config.targetModules.count == 7)
    let adapters = try AdapterSet(model: model, method: .lora, rank: config.rank, scale: ScaleRule.lora.scale(alpha: config.alpha, rank: config.rank), targets: config.targetModules)
    try adapters.load(peft: try PEFTAdapter.openWeights(directory))
    adapters.attach(to: model)
    var logits = [Float](repeating: 0, count: 32 * 448)
    try LlamaRunner(model: model, B: 2, T: 16).forward(tokens: try AdaptTests.ids("input_ids")) { n, row in
      for v in 0..<448 { logits[n * 448 + v] = row[v] }
    }
    let want = try SafetensorsFile(path: fixturePath("adapt/peft_golden.safetensors")).tensor("lora.logits").float32()
    #expect(maxAbsDiff(logits, want) < 1e-4)
  }

  @Test func lorsAdapterInPEFTFormatMergesUnderTheMaskAsPEFTReMasked() throws {
    let (model, _) = try prunedTinyModel()
    let directory = fixturePath("adapt/peft/lors")
    let config = try PEFTAdapter.readConfig(directory)
    #expect(config.useRSLoRA)
    let adapters = try AdapterSet(model: model, method: .lors, rank: config.rank, scale: ScaleRule.rslora.scale(alpha: config.alpha, rank: config.rank))
    #expect(adapters.scale == 4)
    let file = try PEFTAdapter.openWeights(directory)
    try adapters.load(peft: file)
    // Our PEFT names and shapes are exactly the ones PEFT wrote.
    #expect(Set(adapters.peftNames.map(\.peft)) == Set(file.entries.map(\.info.name)))
    for (peft, name) in adapters.peftNames { #expect(try file.tensor(peft).shape == adapters.params.layout.entry(name)!.shape) }
    adapters.attach(to: model)
    let golden = try SafetensorsFile(path: fixturePath("adapt/peft_golden.safetensors"))
    for prefix in adapters.prefixes {
      let ours = try adapters.mergedWeight(prefix, model: model)
      #expect(maxAbsDiff(ours, try golden.tensor("lors.masked_merged.\(prefix).weight").float32()) < 1e-6, "\(prefix)")
      let dense = try golden.tensor("lors.peft_merged.\(prefix).weight").float32()
      #expect(dense.filter { $0 != 0 }.count > ours.filter { $0 != 0 }.count, "PEFT alone densifies \(prefix)")
    }
  }
}

@Suite struct TrainingDataTests {
  @Test func alpacaRecordsTokenizeAsTheGolden() throws {
    let golden = try #require(try BaselineGoldenTests.json("alpaca_tiny_golden.json").objectValue)
    let eos = Int32(try #require(golden["eos_id"]?.intValue))
    let tokenizer = try Tokenizer(contentsOf: fixturePath("tiny-llama/tokenizer.json"))
    let records = try Corpus.records(fixturePath("adapt/alpaca_tiny.json"))
    let expected = try #require(golden["records"]?.arrayValue)
    #expect(records.count == expected.count)
    func ints(_ v: JSONValue?) -> [Int32] {
      (v?.arrayValue ?? []).map { value in
        if case .number(let text) = value { return Int32(text) ?? Int32.min }
        return Int32.min
      }
    }
    for (record, want) in zip(records, expected) {
      guard case .instruction(let instruction, let input, let output) = record else {
        Issue.record("not an Alpaca record")
        continue
      }
      let w = try #require(want.objectValue)
      #expect(AlpacaTemplate.prompt(instruction: instruction, input: input) == w["prompt"]?.stringValue)
      let (ids, labels) = AlpacaTemplate.tokenize(instruction: instruction, input: input, output: output, tokenizer: tokenizer, eos: eos)
      #expect(ids == ints(w["input_ids"]))
      #expect(labels.map { $0 < 0 ? -100 : $0 } == ints(w["labels"]))
    }
    // Windows: inputs are ids[..<T], targets labels[1...], padded; a window too short for the prompt is skipped.
    let data = TrainingData(records: records, tokenizer: tokenizer, length: 256, eos: eos)
    #expect(data.windows.count == records.count && data.skipped == 0)
    let first = try #require(expected.first?.objectValue)
    let ids = ints(first["input_ids"]), labels = ints(first["labels"])
    #expect(Array(data.windows[0].inputs.prefix(ids.count - 1)) == Array(ids.dropLast()))
    #expect(Array(data.windows[0].targets.prefix(ids.count - 1)) == labels.dropFirst().map { $0 == -100 ? -1 : $0 })
    #expect(data.windows[0].targets[(ids.count - 1)...].allSatisfy { $0 == -1 })
    #expect(TrainingData(records: records, tokenizer: tokenizer, length: 64, eos: eos).skipped == records.count)
  }

  @Test func textIsPackedWithEOSAndEveryTokenPredictedOnce() throws {
    let tokenizer = try Tokenizer(contentsOf: fixturePath("tiny-llama/tokenizer.json"))
    let docs = ["The quick brown fox jumps over the lazy dog.", "A second document, shorter."]
    let stream: [Int32] = docs.flatMap { tokenizer.encode($0) + [Int32(0)] }
    let data = TrainingData(records: docs.map { TrainingRecord.text($0) }, tokenizer: tokenizer, length: 8, eos: 0)
    let predicted: [Int32] = data.windows.flatMap { w in w.targets.filter { $0 >= 0 } }
    #expect(predicted == Array(stream.dropFirst()))
    #expect(data.windows.allSatisfy { $0.inputs.count == 8 && $0.targets.count == 8 })
    #expect(data.windows[1].inputs.first == stream[8])
  }

  @Test func windowOrderIsAPermutationPerEpochAndResumable() {
    var order = WindowOrder(count: 10, seed: 3)
    var cursor = DataCursor()
    let first = order.take(25, from: &cursor)
    #expect(Set(first[0..<10]) == Set(0..<10) && Set(first[10..<20]) == Set(0..<10))
    #expect(first[0..<10] != first[10..<20])
    #expect(cursor == DataCursor(epoch: 2, index: 5))
    var fresh = WindowOrder(count: 10, seed: 3)
    var resumed = DataCursor(epoch: 1, index: 3)
    #expect(fresh.take(7, from: &resumed) == Array(first[13..<20]))
  }
}

@Suite struct TrainerTests {
  static func data(_ count: Int) throws -> TrainingData {
    let ids = try AdaptTests.ids("input_ids"), targets = try AdaptTests.ids("targets")
    var windows: [TrainingWindow] = []
    for i in 0..<count {
      let row = i % 2
      var t = Array(targets[(row * 16)..<(row * 16 + 16)])
      for k in 0..<(i % 5) { t[k] = -1 }  // uneven target counts, so accumulation must weight by tokens
      windows.append(TrainingWindow(inputs: Array(ids[(row * 16)..<(row * 16 + 16)]), targets: t))
    }
    return TrainingData(windows: windows)
  }

  static func trainer(batch: Int, accum: Int, steps: Int, method: AdapterMethod = .lors, dropout: Float = 0) throws -> Trainer {
    let (model, _) = try prunedTinyModel()
    let adapters = try AdapterSet(model: model, method: method, rank: 2, scale: 1)
    adapters.dropout = dropout
    adapters.initializeRandomly(seed: 5)
    for i in 0..<adapters.params.layout.totalCount where adapters.params.base[i] == 0 { adapters.params.base[i] = 0.01 }
    var options = TrainingOptions(steps: steps, schedule: CosineSchedule(base: 1e-3, floor: 1e-4, warmup: 1, total: steps))
    options.batchSize = batch
    options.gradAccum = accum
    options.seed = 9
    return try Trainer(model: model, adapters: adapters, data: try data(6), T: 16, options: options)
  }

  @Test func accumulationEqualsOneLargeBatch() throws {
    let big = try Self.trainer(batch: 4, accum: 1, steps: 3), small = try Self.trainer(batch: 1, accum: 4, steps: 3)
    for _ in 0..<3 {
      let a = try big.trainStep(), b = try small.trainStep()
      #expect(abs(a.loss - b.loss) < 1e-5 && a.targetTokens == b.targetTokens)
      #expect(abs(a.gradNorm - b.gradNorm) < 1e-5 * max(1, a.gradNorm))
    }
    #expect(maxAbsDiff(big.state.params, small.state.params) < 1e-5)
  }

  /// Also with dropout, whose masks derive from (seed, step, micro-batch) rather than a running RNG.
  @Test(arguments: [(AdapterMethod.lors, Float(0)), (.lora, 0.2), (.sqft, 0.2)])
  func resumingFromAStateEqualsAnUninterruptedRun(method: AdapterMethod, dropout: Float) throws {
    let straight = try Self.trainer(batch: 2, accum: 2, steps: 5, method: method, dropout: dropout)
    for _ in 0..<5 { _ = try straight.trainStep() }
    let first = try Self.trainer(batch: 2, accum: 2, steps: 5, method: method, dropout: dropout)
    for _ in 0..<2 { _ = try first.trainStep() }
    let second = try Self.trainer(batch: 2, accum: 2, steps: 5, method: method, dropout: dropout)
    try second.restore(first.state)
    for _ in 0..<3 { _ = try second.trainStep() }
    #expect(second.step == 5 && second.cursor == straight.cursor)
    #expect(maxAbsDiff(second.state.params, straight.state.params) < 1e-6)
    #expect(maxAbsDiff(second.state.v, straight.state.v) < 1e-9)
  }

  @Test func aNonFiniteLossStopsBeforeTheUpdate() throws {
    let trainer = try Self.trainer(batch: 2, accum: 1, steps: 3)
    _ = try trainer.trainStep()
    let before = trainer.state.params
    trainer.adapters.params.base[0] = .nan
    #expect(throws: SurgeryError.self) { try trainer.trainStep() }
    #expect(trainer.step == 1)
    #expect(Array(trainer.state.params.dropFirst()) == Array(before.dropFirst()))
  }
}

@Suite struct MergeTests {
  /// algorithms.md §11.4: W' = W + s·(A·B) ⊙ M with LoRS' A (out, r) = PEFT lora_B, B (r, in) = PEFT lora_A.
  @Test func mergeOfTheTestVector() {
    let w: [Float] = [0.5, 0, -0.3, 0, 0, 0.8, 0, -0.6, 0.2, 0, 0, 0.9]
    let lorsA: [Float] = [0.1, -0.2, 0.3, 0.05, -0.15, 0.25]
    let lorsB: [Float] = [0.4, -0.1, 0.2, 0.3, -0.2, 0.5, 0.1, -0.3]
    let want: [Float] = [0.613137, 0, -0.3, 0, 0, 0.792929, 0, -0.493934, 0.044437, 0, 0, 0.730294]
    let s = Float(2 / 2.0.squareRoot())
    for method in [AdapterMethod.lors, .sqft] {
      let merged = Merge.mergedWeight(method: method, weight: w, out: 3, inp: 4, a: lorsB, b: lorsA, rank: 2, scale: s)
      #expect(maxAbsDiff(merged, want) < 1e-6, "\(method)")
      #expect(merged.filter { $0 != 0 }.count == 6)
    }
    #expect(Merge.mergedWeight(method: .lora, weight: w, out: 3, inp: 4, a: lorsB, b: lorsA, rank: 2, scale: s).filter { $0 != 0 }.count == 12)
  }

  /// A kept weight that the cast (or the f32 sum itself) would zero is raised to the smallest normal.
  @Test func keptWeightsNeverBecomeZero() throws {
    let w: [Float] = [0.5, 1e-8, -1e-8, 0, 0.25, -0.25]
    let merged: [Float] = [0.5, 1e-8, -1e-8, 0, 0, -0.25]  // 1e-8 is below F16's smallest subnormal; the 5th cancelled in f32
    let (f16, raised16) = try Merge.cast(merged, weight: w, name: "t", shape: [6], dtype: .f16)
    #expect(raised16 == 3)
    let back = try f16.float32()
    #expect(back[1] == Merge.smallestNormal(.f16) && back[2] == -Merge.smallestNormal(.f16) && back[3] == 0)
    #expect(back[4] == Merge.smallestNormal(.f16))
    let (_, raised32) = try Merge.cast(merged, weight: w, name: "t", shape: [6], dtype: .f32)
    #expect(raised32 == 1)
  }
}
