// LoSA against numpy/scipy/PyTorch goldens (fixtures/make_losa_goldens.py): the cubic schedule and δ
// bands; the per-layer rates against scipy's linprog (exact) and the reference's SLSQP call; the row
// counts adding up to uniform Wanda's; the ranks against the reference's allocate_ranks; the CKA
// importance on synthetic features and on the tiny model's block inputs; per-layer-rate Wanda with the
// reconstruction loss against the dense model; and a whole run whose sparsity is exact after every
// iteration.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

@Suite struct LoSATests {
  static func json(_ name: String) throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("losa/" + name)))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
  }

  static func doubles(_ value: Any?) throws -> [Double] { try #require(value as? [Double]) }

  @Test func scheduleAndBands() throws {
    let schedules = try #require(try Self.json("allocation.json")["schedule"] as? [[String: Any]])
    #expect(schedules.count == 3)
    for s in schedules {
      let (S, T) = (try #require(s["S"] as? Double), try #require(s["T"] as? Int))
      let targets = try Self.doubles(s["targets"]), deltas = try Self.doubles(s["deltas"])
      for t in 1...T {
        #expect(abs(LoSAAllocation.target(iteration: t, of: T, final: S) - targets[t - 1]) < 1e-15, "S \(S) t \(t)")
        #expect(LoSAAllocation.delta(targets[t - 1]) == deltas[t - 1], "S \(S) t \(t)")
      }
      #expect(LoSAAllocation.target(iteration: T, of: T, final: S) == S)
    }
  }

  @Test func ratesAreTheExactSolutionOfTheReferenceProblem() throws {
    let golden = try Self.json("allocation.json")
    let cases = try #require(golden["cases"] as? [[String: Any]])
    #expect(cases.count >= 8)
    for c in cases {
      let name = try #require(c["name"] as? String)
      let importance = try Self.doubles(c["importance"])
      let (target, delta) = (try #require(c["target"] as? Double), try #require(c["delta"] as? Double))
      let x = LoSAAllocation.rates(importance: importance, target: target, delta: delta)
      let linprog = try Self.doubles(c["linprog"]), slsqp = try Self.doubles(c["slsqp"])
      #expect(zip(x, linprog).allSatisfy { abs($0 - $1) < 1e-12 }, "\(name): \(x) vs linprog \(linprog)")
      #expect(zip(x, slsqp).allSatisfy { abs($0 - $1) < 1e-6 }, "\(name): vs SLSQP")
      #expect(abs(x.reduce(0, +) / Double(x.count) - target) < 1e-12, "\(name): the rates average to the target")
      #expect(x.allSatisfy { $0 >= target - delta - 1e-12 && $0 <= target + delta + 1e-12 }, "\(name): every rate in its band")
    }
    // Where the reference's SLSQP stops early, the exact solution is at least as good.
    for c in try #require(golden["slsqp_early_stop"] as? [[String: Any]]) {
      let importance = try Self.doubles(c["importance"])
      let x = LoSAAllocation.rates(importance: importance, target: try #require(c["target"] as? Double), delta: try #require(c["delta"] as? Double))
      let objective = zip(x, importance).reduce(0) { $0 + $1.0 * $1.1 }
      let (exact, slsqp) = (try #require(c["objective_linprog"] as? Double), try #require(c["objective_slsqp"] as? Double))
      #expect(abs(objective - exact) < 1e-12 && objective <= slsqp + 1e-15)
    }
  }

  @Test func rowZerosAddUpToUniformWanda() throws {
    let cases = try #require(try Self.json("allocation.json")["cases"] as? [[String: Any]])
    for c in cases {
      let rates = try Self.doubles(c["closed_form"]), target = try #require(c["target"] as? Double)
      for width in [64, 128, 576, 1536, 4096, 14336] {
        let k = LoSAAllocation.rowZeros(rates: rates, width: width, target: target)
        #expect(k.reduce(0, +) == rates.count * Int((Double(width) * target).rounded(.down)), "width \(width)")
        // Apportioned from width·rate shifted down by uniform Wanda's rounding, frac(width·target), so that
        // the shifted values add up to the count: each count is one of the two integers around its value.
        let shift = Double(width) * target - (Double(width) * target).rounded(.down)
        #expect(zip(k, rates).allSatisfy { abs(Double($0) - (Double(width) * $1 - shift)) < 1 }, "width \(width): \(k)")
      }
    }
    // Zeros do not grow back: a floor from the iteration before is kept, and the total still holds.
    let rates = [0.49, 0.51, 0.49, 0.51], previous = [300, 250, 250, 250]
    let k = LoSAAllocation.rowZeros(rates: rates, width: 576, target: 0.5, atLeast: previous)
    #expect(k.reduce(0, +) == 4 * 288 && zip(k, previous).allSatisfy { $0 >= $1 } && k[0] == 300)
  }

  @Test func ranksMatchTheReference() throws {
    let golden = try Self.json("ranks.json")
    let maxRank = try #require(golden["max_rank"] as? Int)
    let cases = try #require(golden["cases"] as? [[String: Any]])
    #expect(cases.count >= 10)
    for c in cases {
      let losses = try Self.doubles(c["loss"]), m = try #require(c["mean_rank"] as? Int)
      let r = LoSAAllocation.ranks(losses: losses, meanRank: m, maxRank: maxRank)
      let want = try #require(c["ranks"] as? [Int])
      #expect(r == want, "\(c["name"] ?? "")")
      #expect(r.reduce(0, +) == m * losses.count && r.allSatisfy { $0 >= 1 && $0 <= maxRank })
    }
    // One pass of ±1 leaves the reference short of the budget here; repeating it reaches the budget.
    let multi = try #require(golden["multi_pass"] as? [String: Any])
    let losses = try Self.doubles(multi["loss"]), m = try #require(multi["mean_rank"] as? Int)
    let r = LoSAAllocation.ranks(losses: losses, meanRank: m, maxRank: maxRank)
    let (referenceSum, continued) = (try #require(multi["reference_sum"] as? Int), try #require(multi["continued_ranks"] as? [Int]))
    #expect(referenceSum < m * losses.count)
    #expect(r.reduce(0, +) == m * losses.count && r == continued)
  }

  @Test func ckaImportanceOnSyntheticFeatures() throws {
    let golden = try Self.json("cka.json")
    let (n, d, L) = (try #require(golden["n"] as? Int), try #require(golden["d"] as? Int), try #require(golden["L"] as? Int))
    let features = try #require(golden["features"] as? [[Double]])
    // Grams of the float32 features, in Double: the centring and CKA are what is tested here.
    let grams = features.map { x in
      (0..<(n * n)).map { k in (0..<d).reduce(0.0) { $0 + x[k / n * d + $1] * x[k % n * d + $1] } }
    }
    let wantGrams = try #require(golden["grams"] as? [[Double]])
    for l in 0..<L { #expect(zip(grams[l], wantGrams[l]).allSatisfy { abs($0 - $1) <= 1e-9 * max(1, abs($1)) }) }
    let imp = LayerImportance(grams: wantGrams, n: n, beta: try #require(golden["beta"] as? Double))
    let cka = try #require(golden["cka"] as? [[Double]])
    for l in 0..<L { #expect(zip(imp.cka[l], cka[l]).allSatisfy { abs($0 - $1) < 1e-12 }, "cka row \(l)") }
    #expect(zip(imp.similarity, try Self.doubles(golden["sim"])).allSatisfy { abs($0 - $1) < 1e-12 })
    #expect(zip(imp.importance, try Self.doubles(golden["importance"])).allSatisfy { abs($0 - $1) < 1e-12 })
  }

  @Test func ckaOfTheTinyModelsBlockInputs() throws {
    let golden = try #require(try Self.json("tiny.json")["cka"] as? [String: Any])
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    let grams = try LayerImportance.grams(model, windows: try CalibrationTests.windows(), batch: 3, maxMemory: 1 << 30, temporaryDirectory: "/tmp")
    let want = try #require(golden["grams"] as? [[Double]])
    for l in 0..<2 {
      let worst = zip(grams[l], want[l]).map { abs($0 - $1) / max(1, abs($1)) }.max()!
      // f32 GEMM over 2048 products of features that match PyTorch's to ~1e-6.
      #expect(worst < 5e-5, "gram \(l): relative error \(worst)")
    }
    let imp = LayerImportance(grams: grams, n: 8)
    let cka = try #require(golden["cka"] as? [[Double]])
    #expect(abs(imp.cka[0][1] - cka[0][1]) < 1e-6, "\(imp.cka[0][1]) vs \(cka[0][1])")
    #expect(zip(imp.importance, try Self.doubles(golden["importance"])).allSatisfy { abs($0 - $1) < 1e-6 })
  }

  @Test func perLayerWandaAndReconstructionLossMatchPyTorch() throws {
    let golden = try #require(try Self.json("tiny.json")["wanda"] as? [String: Any])
    let perRow = try #require(golden["pruned_per_row"] as? [String: [Int]])
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    let dense = try LlamaModel.load(fixturePath("tiny-llama"), residency: .streamed)
    var options = PruneOptions(method: .wanda, target: .unstructured(0.5))
    options.batchSize = 3
    // q_proj's count stands for every width-64 projection, down_proj's for width 128.
    options.layerRowZeros = (0..<2).map { l in [64: perRow["q_proj"]![l], 128: perRow["down_proj"]![l]] }
    let report = try Pruner.prune(model, windows: try CalibrationTests.windows(), options: options, reference: dense)
    let masks = try SafetensorsFile(path: fixturePath("losa/tiny_wanda_rates_masks.safetensors"))
    let original = try SafetensorsFile(path: fixturePath("tiny-llama/model.safetensors"))
    #expect(masks.entries.count == 14)
    for e in masks.entries {
      let mask = try masks.tensor(e).byteArray
      let entry = try #require(model.params.layout.entry(e.info.name))
      let got = Array(UnsafeBufferPointer(start: model.params.base + entry.offset, count: entry.count))
      let weights = try original.tensor(e.info.name).float32()
      #expect(zip(got, mask).filter { ($0 == 0) != ($1 == 1) }.isEmpty, "\(e.info.name): mask")
      #expect(zip(zip(got, weights), mask).allSatisfy { $1 == 1 || $0.0 == $0.1 }, "\(e.info.name): kept weights unchanged")
    }
    let zeros = try #require(golden["zeros"] as? Int)
    #expect(report.zeros == zeros)
    let want = try Self.doubles(golden["recon_loss"])
    #expect(report.reconstruction.count == 2)
    for (got, want) in zip(report.reconstruction, want) { #expect(abs(got - want) / want < 1e-4, "\(got) vs \(want)") }
  }

  /// Zeros of uniform Wanda at `target` on the tiny model: every projection's rows × ⌊cols·target⌋.
  static func uniformZeros(_ target: Double) -> Int {
    let shapes = [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64), (64, 128)]
    return 2 * shapes.reduce(0) { $0 + $1.0 * Int((Double($1.1) * target).rounded(.down)) }
  }

  @Test(arguments: [PruneMethod.wanda, .sparsegpt])
  func aRunIsExactAfterEveryIterationAndLeavesAnOrdinaryBase(pruner: PruneMethod) throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("losa-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var o = FinetuneOptions()
    (o.method, o.rank, o.alpha, o.lr, o.steps, o.seqLen, o.batchSize, o.gradAccum) = (.losa, 16, 16, 1e-3, 10, 32, 2, 1)
    o.gradient = .exact
    var losa = LoSAOptions(sparsity: 0.6)
    (losa.pruner, losa.calibrationSamples, losa.similaritySamples) = (pruner, 8, 4)
    let report = try LoSA.run(
      modelPath: fixturePath("tiny-llama"), dataPath: fixturePath("tokenizer/prose.txt"), output: dir, options: o, losa: losa) { _ in }
    #expect(report.losa.map(\.iteration) == [1, 2, 3, 4, 5] && report.losa.map(\.steps) == [1, 1, 1, 1, 6])
    #expect(report.losa.map(\.meanRank) == [6, 7, 8, 9, 10])
    for i in report.losa {
      #expect(i.ranks.reduce(0, +) == 2 * i.meanRank && i.reconstruction.count == 2 && i.reconstruction.allSatisfy { $0 > 0 })
      #expect(abs(i.rates.reduce(0, +) / 2 - i.target) < 1e-12)
      // Wanda prunes exactly uniform Wanda's count; SparseGPT's per-block thresholds come close.
      if pruner == .wanda { #expect(i.zeros == Self.uniformZeros(i.target), "iteration \(i.iteration)") }
      else { #expect(abs(i.sparsity - i.target) < 0.02, "iteration \(i.iteration): \(i.sparsity)") }
    }
    #expect(report.losa.last?.target == 0.6)
    // The base is an ordinary checkpoint with those zeros; the work directory is gone.
    let base = try SafetensorsFile(path: dir + "/base/model.safetensors")
    var zeros = 0
    for e in base.entries where e.info.name.hasSuffix("proj.weight") { zeros += try base.tensor(e).float32().filter { $0 == 0 }.count }
    #expect(zeros == report.losa.last!.zeros)
    #expect(!FileManager.default.fileExists(atPath: dir + "/.losa-work"))
    let record = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/losa.json"))) as? [String: Any])
    #expect((record["per_iteration"] as? [Any])?.count == 5)
  }
}
