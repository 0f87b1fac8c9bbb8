// LoRS on the whole tiny Llama against a PyTorch implementation (fixtures/make_adapt_goldens.py):
// loss, every adapter gradient in both forms, the gradient at the embedding output, five AdamW steps;
// the merged weights keep the base's zeros. AdamW and the schedule against torch / HF alone.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

@Suite struct AdaptTests {
  static func json(_ name: String) throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("adapt/" + name)))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
  }

  @Test func adamWMatchesTorchBitForBit() throws {
    let unit = try #require(try Self.json("adamw_unit.json")["adamw"] as? [String: Any])
    let h = try #require(unit["hyperparameters"] as? [String: Any])
    var p = try #require(unit["p0_bits"] as? [UInt32]).map { Float(bitPattern: $0) }
    let grads = try #require(unit["grads_bits"] as? [[UInt32]]).map { $0.map { Float(bitPattern: $0) } }
    let after = try #require(unit["params_after_step_bits"] as? [[UInt32]])
    let optimizer = AdamW(count: p.count, weightDecay: Float(try #require(h["weight_decay"] as? Double)))
    optimizer.beta1 = Float(try #require(h["beta1"] as? Double))
    optimizer.beta2 = Float(try #require(h["beta2"] as? Double))
    optimizer.eps = Float(try #require(h["eps"] as? Double))
    for (step, g) in grads.enumerated() {
      optimizer.update(&p, grads: g, count: p.count, lr: try #require(h["lr"] as? Double))
      #expect(p.map(\.bitPattern) == after[step], "step \(step + 1)")
    }
  }

  @Test func cosineScheduleWithWarmupAndFloor() throws {
    let s = try #require(try Self.json("adamw_unit.json")["lr_schedule"] as? [String: Any])
    let schedule = CosineSchedule(
      base: try #require(s["base_lr"] as? Double), floor: try #require(s["min_lr"] as? Double),
      warmup: try #require(s["num_warmup_steps"] as? Int), total: try #require(s["num_training_steps"] as? Int))
    let steps = try #require(s["steps"] as? [Int]), rates = try #require(s["lr"] as? [Double])
    for (t, want) in zip(steps, rates) { #expect(abs(schedule.rate(at: t) - want) <= 1e-18, "step \(t)") }
  }

  /// The pruned tiny model with LoRS adapters initialised from the golden file.
  static func setUp(_ gradient: LoRSGradient) throws -> (LlamaModel, AdapterSet, SafetensorsFile) {
    let golden = try SafetensorsFile(path: fixturePath("adapt/lors_tiny.safetensors"))
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    for e in golden.entries where e.info.name.hasPrefix("base.") {
      let name = String(e.info.name.dropFirst(5))
      let values = try golden.tensor(e).float32()
      model.weight(name).update(from: values, count: values.count)
    }
    let adapters = try AdapterSet(model: model, method: .lors, rank: 4, scale: ScaleRule.rslora.scale(alpha: 8, rank: 4))
    #expect(adapters.scale == 4)
    #expect(adapters.prefixes.count == 14)
    for entry in adapters.params.layout.entries {
      let values = try golden.tensor("init." + entry.name).float32()
      (adapters.params.base + entry.offset).update(from: values, count: values.count)
    }
    adapters.attach(to: model, gradient: gradient)
    return (model, adapters, golden)
  }

  static func ids(_ name: String) throws -> [Int32] {
    try SafetensorsFile(path: fixturePath("engine/tiny_golden.safetensors")).tensor(name).withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
  }

  @Test(arguments: LoRSGradient.allCases)
  func adapterGradientsMatchTorch(gradient: LoRSGradient) throws {
    let (model, adapters, golden) = try Self.setUp(gradient)
    let runner = LlamaRunner(model: model, B: 2, T: 16)
    runner.captureLayerInputGradients = true
    let result = try runner.forward(tokens: try Self.ids("input_ids"), targets: try Self.ids("targets"), prepareBackward: true)
    try runner.backward()
    #expect(abs(result.loss - (try golden.tensor("loss").float32())[0]) < 1e-5)
    #expect(maxAbsDiff(runner.layerInputGradients[0], try golden.tensor("grad.reordered.layer_input.0").float32()) < 1e-5)
    for entry in adapters.grads.layout.entries {
      let ours = Array(UnsafeBufferPointer(start: adapters.grads.base + entry.offset, count: entry.count))
      let want = try golden.tensor("grad.\(gradient.rawValue).\(entry.name)").float32()
      #expect(maxAbsDiff(ours, want) < 1e-5, "\(gradient) \(entry.name)")
    }
  }

  @Test func fiveAdamWStepsMatchTorchAndKeepTheMask() throws {
    let (model, adapters, golden) = try Self.setUp(.reordered)
    let recipe = try Self.json("lors_tiny_adamw.json")
    let losses = try #require(recipe["losses_before_each_step"] as? [Double])
    let optimizer = AdamW(count: adapters.params.layout.totalCount, weightDecay: 0.01)
    let runner = LlamaRunner(model: model, B: 2, T: 16)
    let tokens = try Self.ids("input_ids"), targets = try Self.ids("targets")
    for step in 0..<5 {
      adapters.zeroGrad()
      let result = try runner.forward(tokens: tokens, targets: targets, prepareBackward: true)
      try runner.backward()
      #expect(abs(Double(result.loss) - losses[step]) < 1e-5, "loss before step \(step + 1)")
      optimizer.update(adapters.params.base, grads: adapters.grads.base, count: adapters.params.layout.totalCount, lr: 1e-3)
    }
    let after = try #require(recipe["after_step_5"] as? [String: Any])
    for (name, value) in after {
      let want = try #require((value as? [String: Any])?["first8"] as? [Double])
      let got = Array(UnsafeBufferPointer(start: adapters.params.pointer(name)!, count: 8))
      for i in 0..<8 { #expect(abs(Double(got[i]) - want[i]) < 2e-6, "\(name)[\(i)]") }
    }
    // Merging keeps exactly the base's zeros.
    for prefix in adapters.prefixes {
      let layer = try #require(model.linears[Int(prefix.split(separator: ".")[2])!].first { ($0 as? LoRSLinear)?.weight == UnsafePointer(model.weight(prefix + ".weight")) } as? LoRSLinear)
      var merged = [Float](repeating: 0, count: layer.outFeatures * layer.inFeatures)
      layer.mergedWeight(into: &merged)
      let base = try golden.tensor("base." + prefix + ".weight").float32()
      #expect(zip(merged, base).allSatisfy { ($0 == 0) == ($1 == 0) }, "\(prefix)")
    }
  }
}

@Suite struct GradientInitTests {
  static let G: [Float] = [
    0.3, -1.2, 0.5, 0, 0.8, -0.1,
    1, 0.4, -0.7, 0.2, -0.3, 0.6,
    -0.5, 0.9, 0.1, -1.1, 0.2, 0.4,
    0.2, -0.3, 1.4, 0.5, -0.6, -0.9,
  ]

  /// Sign-free quantities of algorithms.md §11.5: diag(BᵀB) and ‖G·BᵀB‖_F for r = 1 and 2.
  @Test(arguments: [
    (1, [0.004773, 0.304995, 0.366039, 0.113188, 0.000677, 0.210328], 2.306144),
    (2, [0.412854, 0.389501, 0.590252, 0.357357, 0.004505, 0.245532], 2.808877),
  ])
  func svdOfTheTestGradient(rank: Int, diagonal: [Double], norm: Double) throws {
    let b = try GradientInit.rightSingularVectors(Self.G, rows: 4, cols: 6, rank: rank)
    var btb = [Double](repeating: 0, count: 36)
    for i in 0..<6 { for j in 0..<6 { for k in 0..<rank { btb[i * 6 + j] += Double(b[k * 6 + i]) * Double(b[k * 6 + j]) } } }
    for i in 0..<6 { #expect(abs(btb[i * 7] - diagonal[i]) < 1e-5, "diag \(i)") }
    #expect(abs((0..<6).reduce(0) { $0 + btb[$1 * 7] } - Double(rank)) < 1e-5)
    var projected = 0.0
    for r in 0..<4 {
      for j in 0..<6 {
        var v = 0.0
        for i in 0..<6 { v += Double(Self.G[r * 6 + i]) * btb[i * 6 + j] }
        projected += v * v
      }
    }
    #expect(abs(projected.squareRoot() - norm) < 1e-5)
  }

  /// On the tiny model: the estimated gradients equal the golden weight gradients of the engine test
  /// (one batch), grouping by memory changes nothing, and after init the output is unchanged (A = 0).
  @Test func estimateAndInitialiseOnTheTinyModel() throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    let golden = try SafetensorsFile(path: fixturePath("engine/tiny_golden.safetensors"))
    let tokens = try AdaptTests.ids("input_ids"), targets = try AdaptTests.ids("targets")
    let adapters = try AdapterSet(model: model, method: .lors, rank: 2, scale: 1)
    let all = try GradientInit.estimateGradients(model: model, prefixes: adapters.prefixes, batches: [(tokens, targets)], B: 2, T: 16, maxMemory: 1 << 30)
    let grouped = try GradientInit.estimateGradients(model: model, prefixes: adapters.prefixes, batches: [(tokens, targets)], B: 2, T: 16, maxMemory: 40_000)
    for prefix in adapters.prefixes {
      #expect(maxAbsDiff(all[prefix]!, try golden.tensor("grad." + prefix + ".weight").float32()) < 1e-4, "\(prefix)")
      // Not bitwise: tests run in parallel and OpenBLAS's thread count is process-wide, so two passes
      // may use different GEMM partitions and differ in the last bits.
      #expect(maxAbsDiff(all[prefix]!, grouped[prefix]!) < 1e-6, "\(prefix) grouped")
    }
    let before = try LlamaRunner(model: model, B: 2, T: 16).forward(tokens: tokens, targets: targets).loss
    try GradientInit.initialize(adapters, model: model, gradients: all)
    adapters.attach(to: model, gradient: .reordered)
    #expect(abs(try LlamaRunner(model: model, B: 2, T: 16).forward(tokens: tokens, targets: targets).loss - before) < 1e-6)
  }
}

/// The sketched gradient init against the exact one on the tiny model: the fraction of ‖G‖'s top-r energy
/// its vectors capture, ‖G·Vᵀ_sketch‖_F / ‖G·Vᵀ_exact‖_F, and exactness when q = 4r covers a dimension.
@Suite struct GradientSketchTests {
  static func captured(rank: Int) throws -> [String: Double] {
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    let tokens = try AdaptTests.ids("input_ids"), targets = try AdaptTests.ids("targets")
    let adapters = try AdapterSet(model: model, method: .lors, rank: rank, scale: 1)
    let batches = [(tokens, targets), (Array(tokens.reversed()), Array(targets.reversed()))]
    let exact = try GradientInit.estimateGradients(model: model, prefixes: adapters.prefixes, batches: batches, B: 2, T: 16, maxMemory: 1 << 30)
    let sketched = try GradientInit.sketchedRightSingularVectors(
      model: model, prefixes: adapters.prefixes, batches: batches, B: 2, T: 16, rank: rank, seed: 7)
    var result: [String: Double] = [:]
    for prefix in adapters.prefixes {
      let shape = model.params.layout.entry(prefix + ".weight")!.shape
      let g = exact[prefix]!
      /// ‖G·Vᵀ‖_F for V (rank, in).
      func energy(_ v: [Float]) -> Double {
        var total = 0.0
        for row in 0..<shape[0] {
          for k in 0..<rank {
            var dot = 0.0
            for c in 0..<shape[1] { dot += Double(g[row * shape[1] + c]) * Double(v[k * shape[1] + c]) }
            total += dot * dot
          }
        }
        return total.squareRoot()
      }
      let best = try GradientInit.rightSingularVectors(g, rows: shape[0], cols: shape[1], rank: rank)
      result[prefix] = energy(sketched[prefix]!) / energy(best)
    }
    return result
  }

  @Test func sketchCapturesTheTopSubspace() throws {
    // The tiny model's gradients over 64 tokens have flat spectra (the hardest case for any sketch):
    // r = 2 with k = 8, l = 17 of dimensions 32–128 still captures most of the top-2 energy.
    for (prefix, ratio) in try Self.captured(rank: 2) {
      #expect(ratio > 0.6 && ratio <= 1 + 1e-4, "\(prefix): \(ratio)")
    }
    // r = 16: k = min(64, out, in) covers k/v's 32 output dimensions and q/o's 64: exact there.
    for (prefix, ratio) in try Self.captured(rank: 16) where !prefix.contains("mlp") {
      #expect(abs(ratio - 1) < 1e-3, "\(prefix): \(ratio)")
    }
  }

  /// A gradient with a decaying spectrum, G = U·diag(0.7^i)·Vᵀ (48 × 40), fed to the sketch as N = 40
  /// tokens with X = I and dY = Gᵀ (so dYᵀ·X = G): rank 4 from k = 16 is essentially exact.
  @Test func sketchIsAccurateOnADecayingSpectrum() throws {
    let (out, inp, rank) = (48, 40, 4)
    var random = SplitMix64(seed: 11)
    let a: [Float] = (0..<(out * inp)).map { _ in random.nextUnitFloat() - 0.5 }
    let (u, _, vt) = try Linalg.svd(a, rows: out, cols: inp)
    var g = [Float](repeating: 0, count: out * inp)
    for r in 0..<inp {
      let sigma = Float(pow(0.7, Double(r)))
      for i in 0..<out {
        let left: Float = u[i * inp + r] * sigma
        for j in 0..<inp { g[i * inp + j] += left * vt[r * inp + j] }
      }
    }
    let weight = [Float](repeating: 0, count: out * inp)
    let layer = weight.withUnsafeBufferPointer { w in
      SketchingLinear(DenseLinear(weight: w.baseAddress!, inFeatures: inp, outFeatures: out), rank: rank, seed: 3)
    }
    var x = [Float](repeating: 0, count: inp * inp)
    for i in 0..<inp { x[i * inp + i] = 1 }
    var dy = [Float](repeating: 0, count: inp * out)
    for i in 0..<out { for j in 0..<inp { dy[j * out + i] = g[i * inp + j] } }
    var dx = [Float](repeating: 0, count: inp * inp)
    weight.withUnsafeBufferPointer { _ in layer.backward(dinp: &dx, dout: dy, inp: x, N: inp) }
    let v = try layer.rightSingularVectors(rank: rank)
    // Each true top-4 right singular vector lies in the span of the sketched ones.
    for r in 0..<rank {
      var inside = 0.0
      for k in 0..<rank {
        var dot = 0.0
        for j in 0..<inp { dot += Double(v[k * inp + j]) * Double(vt[r * inp + j]) }
        inside += dot * dot
      }
      #expect(inside > 0.999, "singular vector \(r): \(inside)")
    }
  }

  @Test func recomputedLayersGiveTheSameGradients() throws {
    var gradients: [[Float]] = []
    for recomputed in [0, 2, 1] {
      let model = try LlamaModel.load(fixturePath("tiny-llama"))
      let adapters = try AdapterSet(model: model, method: .lors, rank: 4, scale: 2)
      adapters.initializeRandomly(seed: 5)
      for i in 0..<adapters.params.layout.totalCount where adapters.params.base[i] == 0 { adapters.params.base[i] = Float(i % 11) * 1e-3 - 5e-3 }
      adapters.attach(to: model)
      let runner = LlamaRunner(model: model, B: 2, T: 16, recomputedLayers: recomputed)
      #expect(runner.plan.recomputedLayers == recomputed)
      try runner.forward(tokens: try AdaptTests.ids("input_ids"), targets: try AdaptTests.ids("targets"), prepareBackward: true)
      try runner.backward()
      gradients.append(Array(UnsafeBufferPointer(start: adapters.grads.base, count: adapters.grads.layout.totalCount)))
    }
    #expect(gradients[0].contains { $0 != 0 })
    // Not bitwise only because OpenBLAS's thread count is process-wide while tests run in parallel.
    #expect(maxAbsDiff(gradients[0], gradients[1]) < 1e-6 && maxAbsDiff(gradients[0], gradients[2]) < 1e-6)
    let config = try LlamaModel.load(fixturePath("tiny-llama")).config
    let sizes = (0...2).map { ActivationPlan(config: config, B: 4, T: 256, recomputedLayers: $0).bytes(layers: 2) }
    #expect(sizes[2] < sizes[0])  // one recomputed layer of two costs a working slot: the plan never picks it
  }
}
