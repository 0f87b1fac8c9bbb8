// The whole pipeline on the model families beyond Llama, as a user runs it: Qwen3 and Gemma 3
// (fixtures/tiny-qwen3, tiny-gemma3) pruned to 2:4, tuned with LoRS, merged under the mask, verified
// against the pruned base, evaluated.

import Foundation
import Testing

@testable import Formats

@Suite struct FamilyPipelineTests {
  @Test(arguments: ["qwen3", "gemma3"])
  func prunesTunesMergesVerifiesAndEvaluates(family: String) throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-\(family)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let text = Tools.fixtures + "/tokenizer/prose.txt"
    func run(_ args: [String]) throws -> ToolResult {
      let r = try Tools.run("espalier", args)
      #expect(r.status == 0, "\(args.first ?? ""): \(r.stderr)")
      return r
    }
    _ = try run(["prune", Tools.fixtures + "/tiny-\(family)", dir + "/pruned", "--method", "wanda", "--pattern", "2:4", "--calibration", text, "--nsamples", "4", "--seq-len", "32"])
    _ = try run(["finetune", dir + "/pruned", "--data", text, "--output", dir + "/run", "--method", "lors", "--rank", "4", "--steps", "3",
      "--batch-size", "2", "--seq-len", "32", "--init-samples", "2", "--save-every", "0", "--lr", "1e-3"])
    _ = try run(["merge", dir + "/pruned", dir + "/run", dir + "/merged"])
    _ = try run(["verify", dir + "/merged", "--base", dir + "/pruned", "--pattern", "2:4"])
    let eval = try run(["eval", dir + "/merged", "--text", text, "--seq-len", "32", "--json"])
    let report = try #require(try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as? [String: Any])
    #expect((report["perplexity"] as? Double).map { $0.isFinite && $0 > 1 } == true)
    // The per-head norms came through untouched, and the merge changed the projections.
    let pruned = try SafetensorsFile(path: dir + "/pruned/model.safetensors")
    let merged = try SafetensorsFile(path: dir + "/merged/model.safetensors")
    let norm = "model.layers.1.self_attn.k_norm.weight"
    #expect(try merged.tensor(norm).float32() == (try SafetensorsFile(path: Tools.fixtures + "/tiny-\(family)/model.safetensors").tensor(norm).float32()))
    let q = "model.layers.0.self_attn.q_proj.weight"
    #expect(try merged.tensor(q).float32() != (try pruned.tensor(q).float32()))
  }
}
