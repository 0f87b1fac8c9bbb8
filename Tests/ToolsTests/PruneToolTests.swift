// espalier-prune as a binary: output layout, sparsity.json and metadata, N:M conformance seen by
// espalier-inspect, byte-identical reruns, and usage errors.

import Foundation
import Testing

@testable import Formats

@Suite struct PruneToolTests {
  @Test func wandaTwoFourEndToEnd() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-prune-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let args = ["prune", Tools.fixtures + "/tiny-llama", dir + "/a", "--method", "wanda", "--pattern", "2:4",
      "--calibration", Tools.fixtures + "/tokenizer/prose.txt", "--nsamples", "6", "--seq-len", "48", "--json"]
    let r = try Tools.run("espalier", args)
    #expect(r.status == 0, "\(r.stderr)")
    let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    #expect(report["tensors"] as? Int == 14)
    #expect(abs((report["sparsity"] as? Double ?? 0) - 0.5) < 1e-6)
    let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/a").sorted()
    #expect(files == ["config.json", "generation_config.json", "model.safetensors", "sparsity.json", "tokenizer.json", "tokenizer_config.json"])
    let file = try SafetensorsFile(path: dir + "/a/model.safetensors")
    #expect(file.metadata?["espalier.method"] == "wanda")
    #expect(file.metadata?["espalier.pattern"] == "2:4")
    let sparsity = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/a/sparsity.json"))) as? [String: Any])
    #expect((sparsity["tensors"] as? [String: Any])?.count == 14)
    // Every pruned projection conforms to 2:4; embeddings and lm_head were left alone.
    let inspect = try Tools.run("espalier-inspect", [dir + "/a", "--pattern", "2:4", "--json"])
    let tensors = try #require((try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any])?["tensors"] as? [[String: Any]])
    for t in tensors where (t["name"] as? String ?? "").contains("_proj") {
      #expect((t["pattern"] as? [String: Any])?["conforms"] as? Bool == true, "\(t["name"] ?? "")")
    }
    #expect(tensors.first { $0["name"] as? String == "lm_head.weight" }?["zeros"] as? Int == 0)
    // The same inputs and seed give byte-identical output.
    var again = args
    again[2] = dir + "/b"
    #expect(try Tools.run("espalier", again).status == 0)
    #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/a/model.safetensors")) == Data(contentsOf: URL(fileURLWithPath: dir + "/b/model.safetensors")))
  }

  /// --profile owl writes its rates beside the weights; --layer-sparsity replays them to the same bytes.
  @Test func owlProfileWritesRatesThatReplay() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-prune-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let common = ["--method", "wanda", "--calibration", Tools.fixtures + "/tokenizer/prose.txt", "--nsamples", "6", "--seq-len", "48", "--json"]
    let r = try Tools.run("espalier", ["prune", Tools.fixtures + "/tiny-llama", dir + "/owl", "--sparsity", "0.7", "--profile", "owl", "--owl-m", "3"] + common)
    #expect(r.status == 0, "\(r.stderr)")
    let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    let layers = try #require(report["layer_sparsity"] as? [String: Any])
    let rates = try #require(layers["rates"] as? [Double])
    #expect(layers["profile"] as? String == "owl" && rates.count == 2)
    #expect(abs(rates.reduce(0, +) / 2 - 0.7) < 1e-9 && rates.allSatisfy { abs($0 - 0.7) <= 0.08 + 1e-9 })
    #expect(r.stderr.contains("owl outlier ratios"))
    let file = dir + "/owl/layer_sparsity.json"
    let written = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
    #expect(written["rates"] as? [Double] == rates && written["owl_m"] as? Double == 3)
    // The blocks' sparsities in sparsity.json follow the rates (Wanda: ⌊cols·rate⌋ per row).
    let replay = try Tools.run("espalier", ["prune", Tools.fixtures + "/tiny-llama", dir + "/replay", "--layer-sparsity", file] + common)
    #expect(replay.status == 0, "\(replay.stderr)")
    #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/owl/model.safetensors")) == Data(contentsOf: URL(fileURLWithPath: dir + "/replay/model.safetensors")))
    let sparsity = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/replay/sparsity.json"))) as? [String: Any])
    let tensors = try #require(sparsity["tensors"] as? [String: [String: Any]])
    for (l, rate) in rates.enumerated() {
      let q = try #require(tensors["model.layers.\(l).self_attn.q_proj.weight"]?["zeros"] as? Int)
      #expect(q == 64 * Int((64 * rate).rounded(.down)), "block \(l)")
    }
    // Refusals: N:M with a profile, magnitude with OWL, a rates file beside --sparsity, a file of another model.
    let model = Tools.fixtures + "/tiny-llama"
    for args in [[model, dir + "/x", "--pattern", "2:4", "--profile", "owl"] + common,
      [model, dir + "/x", "--sparsity", "0.7", "--profile", "owl", "--method", "magnitude"],
      [model, dir + "/x", "--sparsity", "0.7", "--layer-sparsity", file] + common,
      [model, dir + "/x", "--sparsity", "0.7", "--profile", "owl", "--owl-lambda", "0.7"] + common] {
      let refused = try Tools.run("espalier-prune", args)
      #expect(refused.status == 64, "\(args): \(refused.stderr)")
    }
    try #"{"rates": [0.5, 0.5, 0.5]}"#.write(toFile: dir + "/three.json", atomically: true, encoding: .utf8)
    let wrong = try Tools.run("espalier-prune", [model, dir + "/x", "--layer-sparsity", dir + "/three.json"] + common)
    #expect(wrong.status == 64 && wrong.stderr.contains("three.json") && wrong.stderr.contains("3 rates for a model of 2 blocks"), "\(wrong.stderr)")
    #expect(!FileManager.default.fileExists(atPath: dir + "/x"))
  }

  @Test func usageErrors() throws {
    let model = Tools.fixtures + "/tiny-llama"
    for args in [[model, "/tmp/x", "--sparsity", "0.5", "--pattern", "2:4", "--method", "magnitude"],
      [model, "/tmp/x", "--sparsity", "0.5"], [model, "/tmp/x", "--sparsity", "1.5", "--method", "magnitude"],
      [model, "/tmp/x", "--pattern", "2:4", "--method", "obs"]] {
      #expect(try Tools.run("espalier-prune", args).status == 64, "\(args)")
    }
    let help = try Tools.run("espalier-prune", ["--help"])
    for flag in ["--method", "--sparsity", "--pattern", "--profile", "--owl-m", "--owl-lambda", "--layer-sparsity", "--calibration", "--nsamples", "--seq-len", "--seed", "--percdamp", "--include", "--exclude", "--dtype", "--max-memory", "--json"] {
      #expect(help.stdout.contains(flag), "\(flag)")
    }
  }
}
