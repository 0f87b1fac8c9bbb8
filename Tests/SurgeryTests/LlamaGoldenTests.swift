// The whole engine against HF transformers (fixtures/make_engine_goldens.py) on the tiny Llama, batch
// 2 × 16: logits, loss, every layer input, the gradient with respect to the embedding output and every
// layer input, and the gradient of every projection weight, each within 1e-4.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

func fixturePath(_ relative: String) -> String {
  var url = URL(fileURLWithPath: #filePath)
  for _ in 0..<3 { url.deleteLastPathComponent() }
  return url.appendingPathComponent("fixtures/" + relative).path
}

func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
  guard a.count == b.count else { return .infinity }
  return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// One forward and backward of `model` on a 2 × 16 batch, keeping every projection's weight gradient
/// (to check every linear backward too) and every block input's gradient: the runner, the logits, the
/// head's result and the gradients.
func forwardBackwardKeepingWeightGradients(
  _ model: LlamaModel, tokens: [Int32], targets: [Int32]
) throws -> (LlamaRunner, [Float], LMHeadResult, ParamArena) {
  let c = model.config
  let grads = ParamArena(model.params.layout)
  for l in 0..<c.layers {
    for (p, name) in LlamaTensors.projections.enumerated() {
      (model.linears[l][p] as! DenseLinear).weightGrad = grads.pointer("model.layers.\(l).\(name).weight")
    }
  }
  let runner = LlamaRunner(model: model, B: 2, T: 16, headChunk: 7)
  runner.captureLayerInputGradients = true
  var logits = [Float](repeating: 0, count: 2 * 16 * c.vocabSize)
  let result = try runner.forward(tokens: tokens, targets: targets, prepareBackward: true) { n, row in
    for j in 0..<row.count { logits[n * c.vocabSize + j] = row[j] }
  }
  try runner.backward()
  return (runner, logits, result, grads)
}

@Suite struct LlamaGoldenTests {
  let golden: SafetensorsFile
  init() throws { golden = try SafetensorsFile(path: fixturePath("engine/tiny_golden.safetensors")) }

  func values(_ name: String) throws -> [Float] { try golden.tensor(name).float32() }
  func ids(_ name: String) throws -> [Int32] { try golden.tensor(name).withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) } }

  @Test func forwardAndBackwardMatchTransformers() throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    let c = model.config
    let (runner, logits, result, grads) = try forwardBackwardKeepingWeightGradients(model, tokens: try ids("input_ids"), targets: try ids("targets"))

    #expect(abs(result.loss - (try values("loss"))[0]) < 1e-5, "loss \(result.loss)")
    #expect(maxAbsDiff(logits, try values("logits")) < 1e-4)
    for l in 0..<c.layers {
      #expect(maxAbsDiff(runner.layerInput(l), try values("layer_input.\(l)")) < 1e-4, "layer \(l) input")
      #expect(maxAbsDiff(runner.layerInputGradients[l], try values("grad.layer_input.\(l)")) < 1e-4, "layer \(l) input gradient")
    }
    #expect(maxAbsDiff(runner.layerInput(c.layers), try values("final_norm_input")) < 1e-4)
    #expect(maxAbsDiff(runner.layerInputGradients[c.layers], try values("grad.final_norm_input")) < 1e-4)
    for l in 0..<c.layers {
      for name in LlamaTensors.projections {
        let full = "model.layers.\(l).\(name).weight"
        let entry = grads.layout.entry(full)!
        let ours = Array(UnsafeBufferPointer(start: grads.base + entry.offset, count: entry.count))
        #expect(maxAbsDiff(ours, try values("grad." + full)) < 1e-4, "\(full) gradient")
      }
    }
  }

  @Test func chunkingAndBatchShapeDoNotChangeTheLoss() throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    let tokens = try ids("input_ids"), targets = try ids("targets")
    let a = try LlamaRunner(model: model, B: 2, T: 16, headChunk: 32).forward(tokens: tokens, targets: targets)
    let b = try LlamaRunner(model: model, B: 2, T: 16, headChunk: 5).forward(tokens: tokens, targets: targets)
    #expect(abs(a.loss - b.loss) < 1e-6)
    // One sequence at a time gives the same per-token NLL (sequences do not see each other).
    let runner = LlamaRunner(model: model, B: 2, T: 16)
    try runner.forward(tokens: tokens, targets: targets)
    let both = runner.tokenNLL
    let single = LlamaRunner(model: model, B: 1, T: 16)
    try single.forward(tokens: Array(tokens[16..<32]), targets: Array(targets[16..<32]))
    #expect(maxAbsDiff(single.tokenNLL, Array(both[16..<32])) < 1e-5)
  }

  @Test func badInputsAreRefused() throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    let runner = LlamaRunner(model: model, B: 1, T: 4)
    #expect(throws: SurgeryError.invalidToken(id: 448, vocabSize: 448)) { try runner.forward(tokens: [1, 2, 3, 448]) }
    #expect(throws: SurgeryError.self) { try runner.forward(tokens: [1, 2, 3]) }
    #expect(throws: SurgeryError.self) { try runner.backward() }
  }
}
