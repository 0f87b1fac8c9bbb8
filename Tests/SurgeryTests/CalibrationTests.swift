// Layer-sequential pruning of the tiny Llama against a PyTorch implementation of the reference
// algorithms on the same calibration windows (fixtures/make_prune_goldens.py): masks identical, SparseGPT
// weights within 1e-4; plus the window sampler and the tool as a binary.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

@Suite struct CalibrationTests {
  static func windows() throws -> [[Int32]] {
    let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("prune/calibration_windows.json")))
    let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    return try #require(object["windows"] as? [[Int]]).map { $0.map(Int32.init) }
  }

  @Test(arguments: [
    ("wanda_unstructured50", PruneMethod.wanda, SparsityTarget.unstructured(0.5)),
    ("wanda_2of4", .wanda, .nm(try! NMPattern(n: 2, m: 4))),
    ("sparsegpt_unstructured50", .sparsegpt, .unstructured(0.5)),
    ("sparsegpt_2of4", .sparsegpt, .nm(try! NMPattern(n: 2, m: 4))),
  ])
  func prunedWeightsMatchTheReference(name: String, method: PruneMethod, target: SparsityTarget) throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    var options = PruneOptions(method: method, target: target)
    options.batchSize = 3  // batching must not change the statistics
    let report = try Pruner.prune(model, windows: try Self.windows(), options: options)
    #expect(report.tensors.count == 14)
    let golden = try SafetensorsFile(path: fixturePath("prune/\(name).safetensors"))
    for e in golden.entries {
      let want = try golden.tensor(e).float32()
      let entry = try #require(model.params.layout.entry(e.info.name))
      let got = Array(UnsafeBufferPointer(start: model.params.base + entry.offset, count: entry.count))
      let maskDiffers = zip(got, want).filter { ($0 == 0) != ($1 == 0) }.count
      #expect(maskDiffers == 0, "\(name) \(e.info.name): \(maskDiffers) mask entries differ")
      #expect(maxAbsDiff(got, want) < 1e-4, "\(name) \(e.info.name)")
    }
  }

  @Test func spillingCalibrationStatesChangesNothing() throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    var options = PruneOptions(method: .wanda, target: .unstructured(0.5))
    options.maxMemory = 1000
    let report = try Pruner.prune(model, windows: try Self.windows(), options: options)
    #expect(report.warnings.contains { $0.contains("spilled") })
    let golden = try SafetensorsFile(path: fixturePath("prune/wanda_unstructured50.safetensors"))
    for e in golden.entries {
      let entry = try #require(model.params.layout.entry(e.info.name))
      let got = Array(UnsafeBufferPointer(start: model.params.base + entry.offset, count: entry.count))
      #expect(maxAbsDiff(got, try golden.tensor(e).float32()) < 1e-4)
    }
  }

  @Test func windowSamplerIsDeterministicAndInRange() throws {
    let tokens = (0..<1000).map { Int32($0) }
    let a = try Calibration.windows(from: tokens, count: 5, length: 64, seed: 3)
    #expect(a == (try Calibration.windows(from: tokens, count: 5, length: 64, seed: 3)))
    #expect(a != (try Calibration.windows(from: tokens, count: 5, length: 64, seed: 4)))
    for w in a {
      #expect(w.count == 64)
      #expect(zip(w, w.dropFirst()).allSatisfy { $1 == $0 + 1 })
    }
    #expect(throws: SurgeryError.self) { _ = try Calibration.windows(from: Array(tokens.prefix(10)), count: 1, length: 64, seed: 0) }
  }

  @Test func magnitudeNeedsNoCalibrationAndSkipsExcludedTensors() throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    var options = PruneOptions(method: .magnitude, target: .nm(try NMPattern(n: 2, m: 4)))
    options.selects = { !$0.contains("mlp") }
    let report = try Pruner.prune(model, windows: [], options: options)
    #expect(report.tensors.count == 8)
    #expect(report.tensors.allSatisfy { $0.zeros * 2 >= $0.elements })
    let up = model.params.layout.entry("model.layers.0.mlp.up_proj.weight")!
    #expect(UnsafeBufferPointer(start: model.params.base + up.offset, count: up.count).allSatisfy { $0 != 0 })
  }
}
