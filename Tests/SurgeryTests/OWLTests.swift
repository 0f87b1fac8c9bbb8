// OWL's layerwise sparsity against a PyTorch implementation of luuyin/OWL's prune_wanda_outlier on the
// tiny Llama (fixtures/make_owl_goldens.py): the outlier ratios of pass 1 on the dense model, the rates,
// and the masks of pass 2; the rate formula on its own; rates files read and refused.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

@Suite struct OWLTests {
  static func golden() throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("prune/owl.json")))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
  }

  @Test func ratesFollowOWLsFormula() throws {
    // D = [1, 3, 2, 5]: spread (D − 1)/4 · 0.16 = [0, 0.08, 0.04, 0.16], mean 0.07; keep = spread − 0.07 + 0.3.
    let rates = try OWL.rates(outlierRatios: [1, 3, 2, 5], target: 0.7, lambda: 0.08)
    for (got, want) in zip(rates, [0.77, 0.69, 0.73, 0.61]) { #expect(abs(got - want) < 1e-12) }
    #expect(abs(rates.reduce(0, +) / 4 - 0.7) < 1e-12)
    // More outliers, denser; equal ratios give the uniform target.
    #expect(rates[3] < rates[1] && rates[1] < rates[2] && rates[2] < rates[0])
    #expect(try OWL.rates(outlierRatios: [2, 2, 2], target: 0.6, lambda: 0.08) == [0.6, 0.6, 0.6])
    // At or below 0 a rate becomes 0.01 (OWL's clamp); reaching 1 is refused.
    let clamped = try OWL.rates(outlierRatios: [0, 1], target: 0.05, lambda: 0.1)
    #expect(abs(clamped[0] - 0.15) < 1e-12 && clamped[1] == 0.01)
    #expect(throws: SurgeryError.self) { try OWL.rates(outlierRatios: [0, 1], target: 0.95, lambda: 0.1) }
  }

  @Test func outlierRatiosMatchTheReference() throws {
    let golden = try Self.golden()
    let elements = try #require(golden["block_elements"] as? [Int])
    let byM = try #require(golden["by_m"] as? [String: [String: Any]])
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    var options = PruneOptions(method: .wanda, target: .unstructured(0.7))
    options.batchSize = 3  // batching must not change the statistics
    for (m, facts) in byM {
      let want = try #require(facts["outlier_ratios"] as? [Double])
      let gaps = try #require(facts["threshold_gaps"] as? [Double])
      let got = try OWL.outlierRatios(model, windows: try CalibrationTests.windows(), options: options, m: Double(m)!)
      #expect(got.count == want.count)
      for l in want.indices {
        // The counts are exact unless a score sits within float rounding of the threshold (torch sums the
        // mean in float32, we in Double: about 1e-7 apart): the golden records how close the nearest
        // score is, and only that close may one score count the other way.
        let oneScore = 100 / Double(elements[l])
        let tolerance = gaps[l] < 1e-6 ? oneScore + 1e-9 : 1e-9
        #expect(abs(got[l] - want[l]) <= tolerance, "M \(m) block \(l): \(got[l]) vs \(want[l]) (of \(elements[l]) scores, nearest \(gaps[l]))")
      }
    }
    // Pass 1 leaves the model as it found it.
    let dense = try LlamaModel.load(fixturePath("tiny-llama"))
    let q = try #require(dense.params.layout.entry("model.layers.1.self_attn.q_proj.weight"))
    #expect(Array(UnsafeBufferPointer(start: model.params.base + q.offset, count: q.count)) == Array(UnsafeBufferPointer(start: dense.params.base + q.offset, count: q.count)))
  }

  /// The whole profile through PrunedCheckpoint: pass 1, the rates, pass 2's masks, and the rates file
  /// written beside the weights, which replays to the same weights.
  @Test func owlPruningMatchesTheReferenceAndReplays() throws {
    let golden = try Self.golden()
    let facts = try #require(golden["case"] as? [String: Any])
    let wantRates = try #require(facts["rates"] as? [Double])
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-owl-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var options = PruneOptions(method: .wanda, target: .unstructured(try #require(facts["sparsity"] as? Double)))
    var owl = OWLSettings()
    (owl.m, owl.lambda) = (try #require(facts["m"] as? Double), try #require(facts["lambda"] as? Double))
    options.owl = owl
    let input = try Checkpoint.open(fixturePath("tiny-llama"))
    let (report, files) = try PrunedCheckpoint.prune(
      try LlamaModel.load(fixturePath("tiny-llama")), input: input, windows: try CalibrationTests.windows(), options: options,
      dtype: nil, to: dir + "/owl", convert: ConvertOptions())
    #expect(files.contains(LayerSparsity.fileName))
    let layers = try #require(report.layerSparsity)
    #expect(layers.profile == "owl")
    for (got, want) in zip(layers.rates, wantRates) { #expect(abs(got - want) < 1e-12) }
    let weights = try SafetensorsFile(path: dir + "/owl/model.safetensors")
    let reference = try SafetensorsFile(path: fixturePath("prune/owl_wanda70_m3.safetensors"))
    for e in reference.entries {
      let want = try reference.tensor(e).float32()
      let got = try weights.tensor(e.info.name).float32()
      #expect(zip(got, want).filter { ($0 == 0) != ($1 == 0) }.count == 0, "\(e.info.name): masks differ")
      #expect(got == want, "\(e.info.name)")
    }

    // layer_sparsity.json replays: the same rates, the same bytes.
    let file = try LayerSparsity.read(dir + "/owl/" + LayerSparsity.fileName, layers: 2)
    #expect(file.rates == layers.rates && file.profile == "owl" && file.target == 0.7)
    var replay = PruneOptions(method: .wanda, target: .unstructured(file.target))
    replay.layerSparsity = file
    _ = try PrunedCheckpoint.prune(
      try LlamaModel.load(fixturePath("tiny-llama")), input: input, windows: try CalibrationTests.windows(), options: replay,
      dtype: nil, to: dir + "/replay", convert: ConvertOptions())
    #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/owl/model.safetensors")) == Data(contentsOf: URL(fileURLWithPath: dir + "/replay/model.safetensors")))
  }

  @Test func ratesFilesAreReadOrRefusedByName() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-rates-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    func write(_ text: String) throws -> String {
      let path = dir + "/\(UUID().uuidString).json"
      try text.write(toFile: path, atomically: true, encoding: .utf8)
      return path
    }
    // LoSA's losa.json: the last iteration's rates.
    let losa = try LayerSparsity.read(
      try write(#"{"sparsity": 0.5, "per_iteration": [{"rates": [0.2, 0.3]}, {"rates": [0.45, 0.55]}]}"#), layers: 2)
    #expect(losa.rates == [0.45, 0.55] && losa.profile == "losa" && losa.target == 0.5)
    for (text, why) in [
      (#"{"rates": [0.5]}"#, "1 rates for a model of 2 blocks"), (#"{"rates": [0.5, 1.0]}"#, "rate 1.0 of block 1"),
      (#"{"rates": [0.5, "x"]}"#, "must hold numbers"), (#"{"sparsity": 0.5}"#, "no \"rates\""), ("[1, 2]", "a JSON object"),
    ] {
      let path = try write(text)
      #expect(throws: SurgeryError.self) { try LayerSparsity.read(path, layers: 2) }
      do { _ = try LayerSparsity.read(path, layers: 2) } catch {
        #expect("\(error)".contains(path) && "\(error)".contains(why), "\(error)")
      }
    }
    // An N:M target with per-block rates is refused.
    var options = PruneOptions(method: .wanda, target: .nm(try NMPattern(n: 2, m: 4)))
    options.layerSparsity = losa
    #expect(throws: SurgeryError.self) { try options.checkProfile() }
  }
}
