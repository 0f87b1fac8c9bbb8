// The memory plan at the tools' front door: --plan-only from config.json alone, refusal (exit 3) when
// nothing fits, streamed runs within their budget whose outputs equal the resident runs', and the
// SmolLM2 prune pinned to the digest the code has produced since it was written.

import Foundation
import Testing

@Suite struct MemoryPlanToolTests {
  static func temporaryDirectory() throws -> String {
    let dir = NSTemporaryDirectory() + "espalier-plan-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
  }

  /// Peak RSS (MB) and exit status of a tool run in a fresh process (espalier-bench rss), and the total
  /// (MB) of the memory plan the tool printed on stderr before it started.
  static func measured(_ tool: String, _ args: [String]) throws -> (status: Int, megabytes: Double, planned: Double, line: String) {
    let r = try Tools.run("espalier-bench", ["rss", Tools.binDirectory + "/" + tool] + args)
    let line = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
    let status = Int(line.split(separator: " ").firstIndex(of: "exit").map { line.split(separator: " ")[$0 + 1].dropLast() } ?? "") ?? -1
    let mb = Double(line.components(separatedBy: "peak RSS ").last?.split(separator: " ").first ?? "") ?? .infinity
    let total = r.stderr.split(separator: "\n").first { $0.contains("total, of") }
    let planned = total.flatMap { Double($0.split(separator: " ").first ?? "") } ?? 0
    return (status, mb, planned, line + "\n" + (total.map(String.init) ?? "(no plan on stderr)"))
  }

  /// coreutils' sha256sum of a file.
  static func sha256(_ path: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
    process.arguments = [path]
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(String(decoding: data, as: UTF8.self).prefix(64))
  }

  @Test func planOnlyNeedsOnlyTheConfig() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    // Llama-3-8B's config, no weights.
    let config = """
      {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
       "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
       "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false,
       "torch_dtype": "bfloat16"}
      """
    try config.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
    let prune = try Tools.run("espalier-prune", [dir, dir + "/out", "--method", "wanda", "--pattern", "2:4", "--nsamples", "8", "--seq-len", "512", "--max-memory", "4GB", "--plan-only", "--json"])
    #expect(prune.status == 0, "\(prune.stderr)")
    let plan = try #require(try JSONSerialization.jsonObject(with: Data(prune.stdout.utf8)) as? [String: Any])
    #expect(plan["residency"] as? String == "streamed")
    #expect(plan["fits"] as? Bool == true)
    #expect((plan["total_bytes"] as? Int ?? 0) < 4_000_000_000)
    #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
    // Resident would need 4 bytes per parameter: a 64 GB budget keeps all 8B in f32.
    let big = try Tools.run("espalier-eval", [dir, "--text", "/nonexistent", "--max-memory", "64GB", "--plan-only"])
    #expect(big.status == 0 && big.stdout.contains("every weight resident in f32") && big.stdout.contains("8030M parameters"), "\(big.stdout)\(big.stderr)")
    // Too small for anything: exit 3, the plan says why.
    let small = try Tools.run("espalier-eval", [dir, "--text", "/nonexistent", "--max-memory", "500MB", "--plan-only"])
    #expect(small.status == 3 && small.stdout.contains("DOES NOT FIT"))
    let finetune = try Tools.run("espalier-finetune", [dir, "--data", "/nonexistent", "--output", dir + "/ft", "--max-memory", "6GB", "--plan-only"])
    #expect(finetune.status == 0 || finetune.status == 3, "\(finetune.stderr)")
    #expect(finetune.stdout.contains("memory plan (finetune)"))
  }

  @Test func aRunThatCannotFitIsRefusedBeforeItStarts() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let r = try Tools.run("espalier-prune", [Tools.fixtures + "/tiny-llama", dir + "/out", "--method", "magnitude", "--sparsity", "0.5", "--max-memory", "10MB"])
    #expect(r.status == 3)
    #expect(r.stderr.contains("refusing to start") && r.stderr.contains("DOES NOT FIT"))
    #expect(r.stderr.components(separatedBy: "memory plan (prune)").count == 2, "the plan is printed once")
    #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
  }

  static let gguf = Tools.fixtures + "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
  static let docs = "/usr/share/doc/python3.11/html/_sources/library/functions.rst.txt"

  /// make demo's prune of SmolLM2: the same bytes as before the streaming engine, resident or streamed.
  /// The streamed prune, eval and a LoRS step at the issue's 700 MB each peak below the plan they printed:
  /// the plan is an upper bound, not a guess.
  @Test(.enabled(if: FileManager.default.fileExists(atPath: gguf) && FileManager.default.fileExists(atPath: docs)))
  func smolLM2PruneIsPinnedAndStreamedRunsStayWithinTheirPlans() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(try Tools.run("espalier-convert", [Self.gguf, dir + "/f32", "--dtype", "f32"]).status == 0)
    let args = ["--method", "wanda", "--pattern", "2:4", "--calibration", Self.docs, "--nsamples", "16", "--seq-len", "256"]
    let resident = try Self.measured("espalier-prune", [dir + "/f32", dir + "/resident"] + args)
    let streamed = try Self.measured("espalier-prune", [dir + "/f32", dir + "/streamed", "--max-memory", "300MB"] + args)
    #expect(resident.status == 0 && streamed.status == 0, "\(resident.line)\n\(streamed.line)")
    #expect(streamed.megabytes <= streamed.planned && streamed.planned <= 300, "\(streamed.line)")
    for run in ["resident", "streamed"] {
      #expect(try Self.sha256(dir + "/\(run)/model.safetensors") == "b58101e65aa37a2cbafa670bc37949d39730aa49072d71e5b37388ca95218a9c", "\(run)")
    }
    let eval = try Self.measured("espalier-eval", [dir + "/streamed", "--text", Self.docs, "--seq-len", "256", "--limit", "8", "--max-memory", "300MB"])
    #expect(eval.status == 0 && eval.megabytes <= eval.planned && eval.planned <= 300, "\(eval.line)")
    let lors = try Self.measured("espalier-finetune", [
      dir + "/streamed", "--data", Self.docs, "--output", dir + "/lors", "--steps", "1", "--batch-size", "4", "--grad-accum", "1",
      "--seq-len", "256", "--init", "random", "--max-memory", "700MB"])
    #expect(lors.status == 0 && lors.megabytes <= lors.planned && lors.planned <= 700, "\(lors.line)")
  }

  /// A random-weight checkpoint with Llama-3.2-1B's shapes (2.47 GB of BF16, vocabulary 128256), pruned
  /// and evaluated within the issue's 1.2 GB, tuned with LoRS within 1.5 GB: the streamed engine at a real
  /// size, in CI.
  @Test func llama1BShapePrunesEvaluatesAndTunesWithinItsBudgets() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let make = try Tools.run("espalier-bench", ["make-llama", "llama-3.2-1b", dir + "/base", Tools.fixtures + "/tiny-llama/tokenizer.json"])
    #expect(make.status == 0, "\(make.stdout)")
    let prose = Tools.fixtures + "/tokenizer/prose.txt"
    let prune = try Self.measured("espalier-prune", [
      dir + "/base", dir + "/pruned", "--method", "wanda", "--pattern", "2:4", "--calibration", prose, "--nsamples", "2",
      "--seq-len", "64", "--max-memory", "1.2GB"])
    #expect(prune.status == 0 && prune.megabytes <= prune.planned && prune.planned <= 1200, "\(prune.line)")
    let inspect = try Tools.run("espalier-inspect", [dir + "/pruned", "--pattern", "2:4", "--json"])
    let tensors = try #require((try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any])?["tensors"] as? [[String: Any]])
    #expect(tensors.filter { ($0["name"] as? String ?? "").hasSuffix("_proj.weight") }.count == 16 * 7)
    for t in tensors where (t["name"] as? String ?? "").hasSuffix("_proj.weight") {
      #expect((t["pattern"] as? [String: Any])?["conforms"] as? Bool == true, "\(t["name"] ?? "")")
    }
    let eval = try Self.measured("espalier-eval", [dir + "/pruned", "--text", prose, "--seq-len", "64", "--limit", "2", "--max-memory", "1.2GB"])
    #expect(eval.status == 0 && eval.megabytes <= eval.planned && eval.planned <= 1200, "\(eval.line)")
    // LoRS with the sketched gradient init, streamed and recomputing activations, within 1.5 GB.
    let lors = try Self.measured("espalier-finetune", [
      dir + "/pruned", "--data", prose, "--output", dir + "/lors", "--steps", "1", "--batch-size", "1", "--grad-accum", "1",
      "--seq-len", "64", "--init-samples", "1", "--max-memory", "1.5GB"])
    #expect(lors.status == 0 && lors.megabytes <= lors.planned && lors.planned <= 1500, "\(lors.line)")
    #expect(FileManager.default.fileExists(atPath: dir + "/lors/adapter_model.safetensors"))
  }
}
