// The streamed model (one block's f32 workspace, embedding and head left stored) against the resident one
// on the tiny Llama: the same loss, per-token NLL and adapter gradients; the same perplexity; and pruning
// writes byte-identical checkpoints whose masks are the reference's.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

@Suite struct StreamedModelTests {
  static let tokens: [Int32] = (0..<32).map { (i: Int) -> Int32 in Int32((i * 37 + 11) % 448) }
  static let targets: [Int32] = (0..<32).map { (i: Int) -> Int32 in i % 7 == 3 ? -1 : Int32((i * 53 + 5) % 448) }

  /// Loss, per-token NLL and LoRS adapter gradients of one forward and backward at 2 × 16.
  static func step(_ residency: LlamaModel.Residency) throws -> (Float, [Float], [Float], Int) {
    let model = try LlamaModel.load(fixturePath("tiny-llama"), residency: residency)
    let adapters = try AdapterSet(model: model, method: .lors, rank: 4, scale: 2)
    adapters.initializeRandomly(seed: 3)
    // A nonzero A, so that the gradient of B (and the merged weight) depends on it too.
    for i in 0..<adapters.params.layout.totalCount where adapters.params.base[i] == 0 { adapters.params.base[i] = Float(i % 13) * 1e-3 - 6e-3 }
    adapters.attach(to: model)
    let runner = LlamaRunner(model: model, B: 2, T: 16)
    let result = try runner.forward(tokens: tokens, targets: targets, prepareBackward: true)
    try runner.backward()
    return (result.loss, runner.tokenNLL, Array(UnsafeBufferPointer(start: adapters.grads.base, count: adapters.grads.layout.totalCount)), model.stream?.loads ?? 0)
  }

  @Test func forwardAndBackwardMatchTheResidentModel() throws {
    let (loss, nll, grads, _) = try Self.step(.resident)
    let (streamedLoss, streamedNLL, streamedGrads, loads) = try Self.step(.streamed)
    #expect(abs(loss - streamedLoss) < 1e-5)
    #expect(maxAbsDiff(nll, streamedNLL) < 1e-5)
    let scale = grads.map(abs).max() ?? 1
    #expect(maxAbsDiff(grads, streamedGrads) < 1e-5 * max(1, scale))
    #expect(grads.contains { $0 != 0 })
    // Forward reads blocks 0, 1; backward 1 (still loaded), then 0: three loads for two blocks.
    #expect(loads == 3)
  }

  @Test func perplexityMatchesTheResidentModel() throws {
    let tokenizer = try Tokenizer(contentsOf: fixturePath("tiny-llama"))
    let text = try String(contentsOfFile: fixturePath("tokenizer/prose.txt"), encoding: .utf8)
    let tokens = Array(tokenizer.encode(text).prefix(700))
    var options = EvaluationOptions()
    options.sweepSequences = 4  // three sweeps over ten windows
    let resident = try Evaluate.perplexity(model: try LlamaModel.load(fixturePath("tiny-llama")), tokens: tokens, seqLen: 64, batchSize: 2, options: options)
    let model = try LlamaModel.load(fixturePath("tiny-llama"), residency: .streamed)
    let streamed = try Evaluate.perplexity(model: model, tokens: tokens, seqLen: 64, batchSize: 2, options: options)
    #expect(resident.windows == 10 && streamed.tokens == resident.tokens)
    #expect(abs(resident.nll - streamed.nll) < 1e-6)
    // Layer-major: each block is read once per sweep.
    #expect(model.stream?.loads == 3 * model.config.layers)
  }

  @Test(arguments: [PruneMethod.wanda, .sparsegpt])
  func pruningWritesTheSameBytesEitherWay(method: PruneMethod) throws {
    let dir = NSTemporaryDirectory() + "espalier-streamed-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let windows = try CalibrationTests.windows()
    var digests: [[UInt8]] = []
    for residency in [LlamaModel.Residency.resident, .streamed] {
      let model = try LlamaModel.load(fixturePath("tiny-llama"), residency: residency)
      var options = PruneOptions(method: method, target: .nm(try NMPattern(n: 2, m: 4)))
      options.batchSize = 3
      let output = dir + "/" + residency.rawValue
      let (report, files) = try PrunedCheckpoint.prune(
        model, input: try Checkpoint.open(fixturePath("tiny-llama")), windows: windows, options: options, dtype: nil, to: output,
        convert: ConvertOptions())
      #expect(report.tensors.count == 14 && files.contains("model.safetensors") && files.contains("sparsity.json"))
      digests.append([UInt8](try Data(contentsOf: URL(fileURLWithPath: output + "/model.safetensors"))))
      // The masks are the reference implementation's.
      let written = try SafetensorsFile(path: output + "/model.safetensors")
      let golden = try SafetensorsFile(path: fixturePath("prune/\(method.rawValue)_2of4.safetensors"))
      for e in golden.entries {
        let got = try written.tensor(e.info.name).float32(), want = try golden.tensor(e).float32()
        #expect(zip(got, want).allSatisfy { ($0 == 0) == ($1 == 0) }, "\(residency) \(e.info.name)")
      }
    }
    #expect(digests[0] == digests[1])
  }
}
