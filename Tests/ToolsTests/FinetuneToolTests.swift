// espalier-finetune as a binary: outputs (PEFT adapter, espalier.json, checkpoints, step log), the merged
// weights keep the pruned base's zeros, --resume after an interruption ends byte-identical to an
// uninterrupted run, a diverging run stops with exit 1 keeping its last checkpoint, and usage errors.

import Foundation
import Testing

@testable import Formats

@Suite struct FinetuneToolTests {
  static func temporaryDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-finetune-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
  }

  /// The tiny model pruned 2:4 by magnitude, in `dir`/base.
  static func prunedBase(_ dir: String) throws -> String {
    let r = try Tools.run("espalier-prune", [Tools.fixtures + "/tiny-llama", dir + "/base", "--method", "magnitude", "--pattern", "2:4"])
    #expect(r.status == 0, "\(r.stderr)")
    return dir + "/base"
  }

  static func train(_ base: String, _ out: String, _ extra: [String]) throws -> ToolResult {
    try Tools.run("espalier", ["finetune", base, "--data", Tools.fixtures + "/tokenizer/prose.txt", "--output", out,
      "--seq-len", "64", "--batch-size", "2", "--grad-accum", "2", "--rank", "4", "--lr", "1e-3", "--init-samples", "4"] + extra)
  }

  static func json(_ path: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
  }

  @Test func lorsEndToEndAndResume() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let base = try Self.prunedBase(dir)
    let r = try Self.train(base, dir + "/a", ["--steps", "6", "--save-every", "2", "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    #expect(report["steps"] as? Int == 6 && report["method"] as? String == "lors")
    #expect(r.stderr.contains("step 6/6") && r.stderr.contains("tok/s") && r.stderr.contains("ETA"))
    let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/a").sorted()
    #expect(files == ["adapter_config.json", "adapter_model.safetensors", "checkpoints", "espalier.json", "train_log.jsonl"])
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/a/checkpoints").sorted() == ["step-000002", "step-000004", "step-000006"])
    // The step log: one line per step, losses finite.
    let log = try String(contentsOfFile: dir + "/a/train_log.jsonl", encoding: .utf8).split(separator: "\n")
    #expect(log.count == 6)
    for (i, line) in log.enumerated() {
      let o = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
      #expect(o["step"] as? Int == i + 1 && (o["loss"] as? Double)?.isFinite == true && o["lr"] is Double && o["tokens_per_s"] is Double)
    }
    // PEFT format: names, shapes, config; espalier.json records what merge needs.
    let config = try Self.json(dir + "/a/adapter_config.json")
    #expect(config["r"] as? Int == 4 && config["use_rslora"] as? Bool == true && config["peft_type"] as? String == "LORA")
    #expect(config["target_modules"] as? [String] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"])
    let adapter = try SafetensorsFile(path: dir + "/a/adapter_model.safetensors")
    #expect(adapter.entries.count == 28)
    #expect(try adapter.tensor("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight").shape == [4, 64])
    #expect(try adapter.tensor("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight").shape == [32, 4])
    let espalier = try Self.json(dir + "/a/espalier.json")
    #expect(espalier["method"] as? String == "lors" && espalier["scale_rule"] as? String == "rslora" && espalier["scale"] as? Double == 8)
    #expect((espalier["base_fingerprint"] as? String)?.hasPrefix("fnv1a64:") == true)
    #expect((espalier["mask_source"] as? String)?.contains("W != 0") == true)
    // The merged weight (W + s·A·B) ⊙ M keeps every zero of the base.
    let weights = try SafetensorsFile(path: base + "/model.safetensors")
    let name = "model.layers.1.mlp.down_proj"
    let w = try weights.tensor(name + ".weight").float32()
    let a = try adapter.tensor("base_model.model.\(name).lora_B.weight").float32()  // LoRS A (out, r)
    let b = try adapter.tensor("base_model.model.\(name).lora_A.weight").float32()  // LoRS B (r, in)
    let (out, inp) = (64, 128)
    var changed = 0
    for i in 0..<out {
      for j in 0..<inp where w[i * inp + j] != 0 {
        var delta: Float = 0
        for k in 0..<4 { delta += a[i * 4 + k] * b[k * inp + j] }
        if delta != 0 { changed += 1 }
      }
    }
    #expect(changed > 0, "training moved the adapter")

    // Interrupted after step 2 (later checkpoints and outputs gone), then resumed: byte-identical adapter.
    try FileManager.default.copyItem(atPath: dir + "/a", toPath: dir + "/b")
    for gone in ["checkpoints/step-000004", "checkpoints/step-000006", "adapter_model.safetensors", "adapter_config.json", "espalier.json"] {
      try FileManager.default.removeItem(atPath: dir + "/b/" + gone)
    }
    let resumed = try Self.train(base, dir + "/b", ["--steps", "6", "--save-every", "2", "--resume"])
    #expect(resumed.status == 0, "\(resumed.stderr)")
    #expect(resumed.stderr.contains("resumed from") && resumed.stderr.contains("at step 2"))
    #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/a/adapter_model.safetensors")) == Data(contentsOf: URL(fileURLWithPath: dir + "/b/adapter_model.safetensors")))
    func losses(_ run: String) throws -> [Double] {
      try String(contentsOfFile: dir + "/\(run)/train_log.jsonl", encoding: .utf8).split(separator: "\n").map {
        (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["loss"] as? Double ?? .nan
      }
    }
    #expect(try losses("a") == losses("b"))
    // Merged under the mask: every base zero kept, exactly the kept set nonzero, the adapter's delta applied.
    let merge = try Tools.run("espalier", ["merge", base, dir + "/a", dir + "/merged", "--json"])
    #expect(merge.status == 0, "\(merge.stderr)")
    let merged = try SafetensorsFile(path: dir + "/merged/model.safetensors")
    let wm = try merged.tensor(name + ".weight").float32()
    #expect(zip(wm, w).allSatisfy { ($0 == 0) == ($1 == 0) })
    var worst: Float = 0
    for i in 0..<out {
      for j in 0..<inp where w[i * inp + j] != 0 {
        var delta: Float = 0
        for k in 0..<4 { delta += a[i * 4 + k] * b[k * inp + j] }
        worst = max(worst, abs(wm[i * inp + j] - (w[i * inp + j] + 8 * delta)))
      }
    }
    #expect(worst < 1e-6)
    #expect(try merged.tensor("model.embed_tokens.weight").byteArray == weights.tensor("model.embed_tokens.weight").byteArray)
    let inspect = try Tools.run("espalier-inspect", [dir + "/merged", "--pattern", "2:4", "--json"])
    let tensors = try #require((try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any])?["tensors"] as? [[String: Any]])
    for t in tensors where (t["name"] as? String ?? "").contains("_proj") {
      #expect((t["pattern"] as? [String: Any])?["conforms"] as? Bool == true, "\(t["name"] ?? "")")
    }
    // Another base (the dense model) is refused: the fingerprint differs.
    let wrong = try Tools.run("espalier-merge", [Tools.fixtures + "/tiny-llama", dir + "/a", dir + "/wrong"])
    #expect(wrong.status == 1 && wrong.stderr.contains("trained on another base"), "\(wrong.stderr)")
    #expect(!FileManager.default.fileExists(atPath: dir + "/wrong"))

    // Other settings are refused, naming the difference.
    let mismatch = try Self.train(base, dir + "/b", ["--steps", "6", "--save-every", "2", "--resume", "--rank", "8"])
    #expect(mismatch.status == 64 && mismatch.stderr.contains("rank: checkpoint 4, now 8"))
  }

  @Test(arguments: ["lora", "sqft", "spp"])
  func baselinesTrainAndRecordTheirMethod(method: String) throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let dropout = method == "spp" ? [] : ["--dropout", "0.1"]
    let r = try Self.train(Tools.fixtures + "/tiny-llama", dir + "/out", ["--method", method, "--steps", "2", "--save-every", "0"] + dropout)
    #expect(r.status == 0, "\(r.stderr)")
    let espalier = try Self.json(dir + "/out/espalier.json")
    #expect(espalier["method"] as? String == method && espalier["scale_rule"] as? String == "lora")
    let adapter = try SafetensorsFile(path: dir + "/out/adapter_model.safetensors")
    let shape = try adapter.tensor("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight").shape
    #expect(shape == (method == "spp" ? [16, 64] : [4, 64]))
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/out/checkpoints") == ["step-000002"])
    // A plain LoRA merges only with --allow-densify.
    let merge = try Tools.run("espalier-merge", [Tools.fixtures + "/tiny-llama", dir + "/out", dir + "/merged"])
    #expect(merge.status == (method == "lora" ? 1 : 0), "\(merge.stderr)")
    if method == "lora" {
      #expect(merge.stderr.contains("--allow-densify"))
      #expect(try Tools.run("espalier-merge", [Tools.fixtures + "/tiny-llama", dir + "/out", dir + "/merged", "--allow-densify"]).status == 0)
    }
  }

  /// Every method trains with its reference's recipe unless a flag says otherwise (MethodRecipe): the
  /// values are the references' (shared/reference/algorithms.md), and the run records what it used.
  @Test func eachMethodDefaultsToItsReferenceRecipe() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    // method: lr, min lr, warmup of 100 steps, weight decay, clip, alpha at rank 4, dropout.
    let expected: [String: [Double]] = [
      "lors": [2e-5, 1e-6, 0, 0, 1, 16, 0], "lora": [1e-4, 0, 5, 0, 1, 8, 0.05], "sqft": [3e-4, 0, 7, 0, 1, 8, 0.1],
      "spp": [4e-3, 0, 3, 0.001, 1, 8, 0],
    ]
    for (method, values) in expected.sorted(by: { $0.key < $1.key }) {
      let r = try Tools.run("espalier", ["finetune", Tools.fixtures + "/tiny-llama", "--data", Tools.fixtures + "/tokenizer/prose.txt",
        "--output", dir + "/" + method, "--method", method, "--rank", "4", "--steps", "100", "--seq-len", "16", "--batch-size", "1",
        "--grad-accum", "1", "--init-samples", "2", "--save-every", "0", "--json"])
      #expect(r.status == 0, "\(method): \(r.stderr)")
      let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
      let settings = try #require(report["settings"] as? [String: Any])
      let found = ["lr", "min_lr", "warmup", "weight_decay", "max_grad_norm", "alpha", "dropout"].map { (settings[$0] as? NSNumber)?.doubleValue ?? .nan }
      #expect(found == values, "\(method): \(found)")
      // The scale: LoRS keeps alpha 16 (s = 16/sqrt(4) = 8); the others keep their references' s = 2.
      #expect((settings["scale"] as? NSNumber)?.doubleValue == (method == "lors" ? 8 : 2), "\(method)")
    }
    // A flag overrides its value and nothing else.
    let r = try Tools.run("espalier", ["finetune", Tools.fixtures + "/tiny-llama", "--data", Tools.fixtures + "/tokenizer/prose.txt",
      "--output", dir + "/spp-lr", "--method", "spp", "--lr", "1e-3", "--warmup", "2", "--steps", "4", "--seq-len", "16", "--batch-size", "1",
      "--grad-accum", "1", "--save-every", "0", "--json"])
    let settings = try #require((try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])?["settings"] as? [String: Any])
    #expect((settings["lr"] as? NSNumber)?.doubleValue == 1e-3 && (settings["warmup"] as? NSNumber)?.doubleValue == 2)
    #expect((settings["weight_decay"] as? NSNumber)?.doubleValue == 0.001 && (settings["alpha"] as? NSNumber)?.doubleValue == 32)
  }

  @Test func divergenceStopsWithExitOneAndKeepsTheLastCheckpoint() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let r = try Self.train(Tools.fixtures + "/tiny-llama", dir + "/out", ["--method", "lora", "--steps", "8", "--save-every", "1", "--lr", "1e30", "--max-grad-norm", "0"])
    #expect(r.status == 1, "\(r.stderr)")
    #expect(r.stderr.contains("stopped before updating"))
    let kept = try FileManager.default.contentsOfDirectory(atPath: dir + "/out/checkpoints").sorted()
    #expect(!kept.isEmpty && !kept.contains { $0.contains("partial") })
    #expect(!FileManager.default.fileExists(atPath: dir + "/out/adapter_model.safetensors"))
    let state = try Self.json(dir + "/out/checkpoints/\(kept.last!)/trainer_state.json")
    let adapter = try SafetensorsFile(path: dir + "/out/checkpoints/\(kept.last!)/adapter_state.safetensors")
    #expect(state["step"] as? Int == Int(kept.last!.dropFirst(5)))
    for entry in adapter.entries { #expect(try adapter.tensor(entry).float32().allSatisfy(\.isFinite), "\(entry.info.name)") }
  }

  @Test func losaPrunesTunesAndMergesUnderItsMask() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    // From the dense tiny model to 50%: the base and the adapter merge, and verify passes against the base.
    let r = try Self.train(Tools.fixtures + "/tiny-llama", dir + "/out", [
      "--method", "losa", "--sparsity", "0.5", "--rank", "16", "--steps", "10", "--calibration-samples", "6", "--similarity-samples", "3", "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stderr.contains("LoSA re-prune") && r.stderr.contains("losa 5/5: sparsity 0.5000"))
    let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    let rounds = try #require(report["losa"] as? [[String: Any]])
    #expect(report["method"] as? String == "losa" && rounds.count == 5)
    #expect(rounds.map { $0["mean_rank"] as? Int } == [6, 7, 8, 9, 10] && rounds.last?["sparsity"] as? Double == 0.5)
    let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/out").sorted()
    #expect(files == ["adapter_config.json", "adapter_model.safetensors", "base", "checkpoints", "espalier.json", "losa.json", "train_log.jsonl"])
    // Per-layer ranks: PEFT's rank_pattern, with alpha_pattern keeping s = alpha / r fixed at LoSA's 2.
    let config = try Self.json(dir + "/out/adapter_config.json")
    let ranks = try #require(config["rank_pattern"] as? [String: Int]), alphas = try #require(config["alpha_pattern"] as? [String: Double])
    let last = try #require(rounds.last?["ranks"] as? [Int])
    #expect(ranks["model.layers.1.mlp.down_proj"] == last[1] && alphas["model.layers.1.mlp.down_proj"] == 2 * Double(last[1]))
    let adapter = try SafetensorsFile(path: dir + "/out/adapter_model.safetensors")
    #expect(try adapter.tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").shape == [last[0], 64])
    let merge = try Tools.run("espalier", ["merge", dir + "/out/base", dir + "/out", dir + "/merged"])
    #expect(merge.status == 0, "\(merge.stderr)")
    let verify = try Tools.run("espalier", ["verify", dir + "/merged", "--base", dir + "/out/base", "--sparsity", "0.5", "--json"])
    #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    // The merged model differs from the base (the adapter did something) but not in its zeros.
    let merged = try SafetensorsFile(path: dir + "/merged/model.safetensors"), base = try SafetensorsFile(path: dir + "/out/base/model.safetensors")
    let name = "model.layers.1.mlp.down_proj.weight"
    let (wm, wb) = (try merged.tensor(name).float32(), try base.tensor(name).float32())
    #expect(zip(wm, wb).allSatisfy { ($0 == 0) == ($1 == 0) } && zip(wm, wb).contains { $0 != $1 })
  }

  @Test func usageErrorsAndHelp() throws {
    let model = Tools.fixtures + "/tiny-llama", data = Tools.fixtures + "/tokenizer/prose.txt"
    for extra in [["--method", "dora"], ["--targets", "q_proj,x_proj"], ["--method", "spp", "--init", "gradient"], ["--lr", "0"],
      ["--scale-rule", "sqrt"], ["--resume"], ["--dropout", "0.1"], ["--method", "lora", "--dropout", "1"],
      ["--method", "losa"], ["--sparsity", "0.5"], ["--method", "losa", "--sparsity", "1.5"], ["--method", "losa", "--sparsity", "0.5", "--rank", "8"],
      ["--method", "losa", "--sparsity", "0.5", "--pruner", "magnitude"], ["--method", "losa", "--sparsity", "0.5", "--init", "gradient"]] {
      let r = try Tools.run("espalier-finetune", [model, "--data", data, "--output", "/tmp/espalier-never-\(UUID().uuidString)"] + extra)
      #expect(r.status == 64, "\(extra): \(r.stderr)")
    }
    let help = try Tools.run("espalier-finetune", ["--help"])
    for flag in ["--method", "--rank", "--alpha", "--lr", "--batch-size", "--grad-accum", "--seq-len", "--steps", "--epochs", "--warmup",
      "--seed", "--save-every", "--resume", "--init", "--targets", "--scale-rule", "--gradient",
      "(values: lors, lora, sqft, spp, losa; default: lors)", "--sparsity", "--iterations", "--pruner", "--calibration-samples",
      "--similarity-samples", "--final-share", "(values: gradient, gradient-exact, random)", "(default: 16)"] {
      #expect(help.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ").contains(flag), "\(flag)")
    }
  }
}
