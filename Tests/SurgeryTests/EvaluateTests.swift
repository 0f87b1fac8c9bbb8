// Perplexity and multiple-choice scoring: windows, counting, and agreement with transformers' NLL.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

@Suite struct EvaluateTests {
  @Test func perplexityCountsWindowsAndAgreesWithTheRunner() throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    let tokenizer = try Tokenizer(contentsOf: fixturePath("tiny-llama"))
    let text = try String(contentsOfFile: fixturePath("tokenizer/prose.txt"), encoding: .utf8)
    let tokens = Array(tokenizer.encode(text).prefix(1000))
    let report = try Evaluate.perplexity(model: model, tokens: tokens, seqLen: 64, limit: 5, batchSize: 2)
    #expect(report.windows == 5)
    #expect(report.tokens == 5 * 63)
    // The same windows one by one through the runner.
    var total = 0.0
    for w in 0..<5 {
      let window = Array(tokens[(w * 64)..<((w + 1) * 64)])
      let result = try LlamaRunner(model: model, B: 1, T: 63).forward(tokens: Array(window.dropLast()), targets: Array(window.dropFirst()))
      total += Double(result.loss) * 63
    }
    #expect(abs(report.nll - total / 315) < 1e-5)
    #expect(abs(report.perplexity - exp(report.nll)) < 1e-9)
    let all = try Evaluate.perplexity(model: model, tokens: tokens, seqLen: 64)
    #expect(all.windows == 1000 / 64)
  }

  @Test func scoringRunnerUsesTwoLayerSlotsAndRefusesBackward() throws {
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    let training = LlamaRunner(model: model, B: 1, T: 8)
    let scoring = LlamaRunner(model: model, B: 1, T: 8, training: false)
    #expect(scoring.activationBytes <= training.activationBytes)
    // With more than two layers the saving is the point: SmolLM2's shape at 1 × 2048.
    let smol = LlamaConfig(vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, layers: 30, heads: 9, kvHeads: 3, headDim: 64)
    let trainingPlan = ActivationPlan(config: smol, B: 1, T: 2048)
    let scoringPlan = ActivationPlan(config: smol, B: 1, T: 2048, training: false)
    #expect(scoringPlan.bytes(layers: 30) * 5 < trainingPlan.bytes(layers: 30))
    let tokens: [Int32] = [5, 6, 7, 8, 9, 10, 11, 12], targets: [Int32] = [6, 7, 8, 9, 10, 11, 12, 13]
    let a = try training.forward(tokens: tokens, targets: targets)
    let b = try scoring.forward(tokens: tokens, targets: targets)
    #expect(abs(a.loss - b.loss) < 1e-6)
    #expect(throws: SurgeryError.self) { try scoring.forward(tokens: tokens, targets: targets, prepareBackward: true) }
  }

  @Test(.enabled(if: SmolLM2EngineTests.available, "models/SmolLM2-135M-Instruct.Q4_1.gguf is absent: run `make test`"))
  func smollm2WindowNLLMatchesTransformers() throws {
    let golden = try SafetensorsFile(path: fixturePath("engine/smollm2_golden.safetensors"))
    func ids(_ name: String) throws -> [Int32] { try golden.tensor(name).withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) } }
    let sequence = try ids("smollm2.p2.input_ids") + ids("smollm2.p2.greedy20")
    let model = try LlamaModel.load(SmolLM2EngineTests.ggufPath, maxPositions: 64)
    let report = try Evaluate.perplexity(model: model, tokens: sequence, seqLen: sequence.count)
    #expect(report.windows == 1)
    #expect(abs(report.nll - Double(try golden.tensor("smollm2.p2.nll").float32()[0])) < 1e-4)
  }

  @Test(.enabled(if: SmolLM2EngineTests.available, "models/SmolLM2-135M-Instruct.Q4_1.gguf is absent: run `make test`"))
  func smollm2KnowsEasyAnswers() throws {
    let model = try LlamaModel.load(SmolLM2EngineTests.ggufPath, maxPositions: 64)
    let tokenizer = try Tokenizer.forCheckpoint(SmolLM2EngineTests.ggufPath)
    let items = [
      ChoiceItem(context: "The capital of France is", choices: [" Paris", " a banana", " Berlin"], label: 0),
      ChoiceItem(context: "Two plus two equals", choices: [" seven hundred", " four"], label: 1),
      ChoiceItem(context: "The opposite of hot is", choices: [" cold", " purple"], label: 0),
    ]
    let report = try Evaluate.multipleChoice(model: model, tokenizer: tokenizer, items: items)
    #expect(report.items == 3)
    #expect(report.accuracy == 1)
  }
}
