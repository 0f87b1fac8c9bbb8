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

  @Test func usageErrors() throws {
    let model = Tools.fixtures + "/tiny-llama"
    for args in [[model, "/tmp/x", "--sparsity", "0.5", "--pattern", "2:4", "--method", "magnitude"],
      [model, "/tmp/x", "--sparsity", "0.5"], [model, "/tmp/x", "--sparsity", "1.5", "--method", "magnitude"],
      [model, "/tmp/x", "--pattern", "2:4", "--method", "obs"]] {
      #expect(try Tools.run("espalier-prune", args).status == 64, "\(args)")
    }
    let help = try Tools.run("espalier-prune", ["--help"])
    for flag in ["--method", "--sparsity", "--pattern", "--calibration", "--nsamples", "--seq-len", "--seed", "--percdamp", "--include", "--exclude", "--dtype", "--max-memory", "--json"] {
      #expect(help.stdout.contains(flag), "\(flag)")
    }
  }
}
