// Each failure has its own SurgeryError case, and its message says what happened (no arena message for a
// short calibration text, an empty choice or a missing forward pass).

import Testing

@testable import Formats
@testable import Surgery

@Suite struct SurgeryErrorTests {
  @Test func eachFailureNamesItself() throws {
    #expect(throws: SurgeryError.calibrationTooShort(tokens: 3, windowLength: 8)) {
      _ = try Calibration.windows(from: [1, 2, 3], count: 1, length: 8, seed: 0)
    }
    let model = try LlamaModel.load(fixturePath("tiny-llama"))
    #expect(throws: SurgeryError.textTooShort(tokens: 1)) { _ = try Evaluate.perplexity(model: model, tokens: [5], seqLen: 8) }
    #expect(throws: SurgeryError.calibrationWindows("they differ in length")) {
      _ = try Pruner.prune(model, windows: [[1, 2, 3], [1, 2]], options: PruneOptions(method: .wanda, target: .unstructured(0.5)))
    }
    let runner = LlamaRunner(model: model, B: 1, T: 4)
    #expect(throws: SurgeryError.backwardUnavailable("it needs a forward pass with targets and prepareBackward first")) { try runner.backward() }
    #expect(throws: SurgeryError.batchShape(planned: "1×4 tokens", got: "3 tokens")) { _ = try runner.forward(tokens: [1, 2, 3], targets: nil) }
    let scoring = LlamaRunner(model: model, B: 1, T: 4, training: false)
    #expect(throws: SurgeryError.self) { _ = try scoring.forward(tokens: [1, 2, 3, 4], targets: [2, 3, 4, 5], prepareBackward: true) }

    let messages = [
      SurgeryError.calibrationTooShort(tokens: 3, windowLength: 8), .textTooShort(tokens: 1), .emptyChoice(item: 0),
      .calibrationWindows("none given"), .backwardUnavailable("x"), .batchShape(planned: "1×4 tokens", got: "3 tokens"),
      .noTrainingData(path: "d.txt", windowLength: 16), .windowLength(expected: 16), .resume("x"),
    ].map(\.description)
    #expect(Set(messages).count == messages.count)
    #expect(messages.filter { $0.contains("activation arena") }.count == 1)
  }
}
