// espalier-convert run as a binary: GGUF to an HF directory, dtype changes, sharding, HDF5 both ways,
// and no partial output on failure.

import Foundation
import Testing

@testable import Formats

@Suite struct ConvertToolTests {
  static func temporaryDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-convert-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
  }

  @Test func ggufToAnHFDirectory() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let out = dir + "/tiny"
    let r = try Tools.run("espalier", ["convert", Tools.fixtures + "/gguf/tiny-llama.gguf", out, "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    #expect(report["input_format"] as? String == "gguf")
    #expect(report["tensors"] as? Int == 21)
    let files = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
    #expect(files == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
    let ours = try SafetensorsCheckpoint(path: out)
    let want = try SafetensorsCheckpoint(path: Tools.fixtures + "/tiny-llama")
    for info in want.infos { #expect(try ours.tensor(info.name).byteArray == want.tensor(info.name).byteArray) }
    // No temporary directory is left beside the output.
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["tiny"])
  }

  @Test func dtypeAndShardingOptions() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let out = dir + "/bf16"
    let r = try Tools.run("espalier-convert", [Tools.fixtures + "/tiny-llama", out, "--dtype", "bf16", "--max-shard-size", "100KB"])
    #expect(r.status == 0, "\(r.stderr)")
    let checkpoint = try SafetensorsCheckpoint(path: out)
    #expect(checkpoint.files.count > 1)
    #expect(checkpoint.shards.allSatisfy { $0.entries.reduce(0) { $0 + $1.dataRange.count } <= 100_000 || $0.entries.count == 1 })
    #expect(checkpoint.infos.allSatisfy { $0.dtype == .bf16 })
    let source = try SafetensorsCheckpoint(path: Tools.fixtures + "/tiny-llama")
    for info in source.infos {
      let want = try source.tensor(info.name).float32().map(Float32Conversion.floatToBF16)
      let got = try checkpoint.tensor(info.name).withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
      #expect(got == want, "\(info.name)")
    }
    // Side files come along from an HF directory.
    #expect(FileManager.default.fileExists(atPath: out + "/tokenizer.json"))
    #expect(FileManager.default.fileExists(atPath: out + "/config.json"))
  }

  @Test func hdf5BothWays() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let h5 = dir + "/tiny.h5"
    #expect(try Tools.run("espalier-convert", [Tools.fixtures + "/tiny-llama/model.safetensors", h5]).status == 0)
    let back = dir + "/back.safetensors"
    #expect(try Tools.run("espalier-convert", [h5, back]).status == 0)
    #expect(try Data(contentsOf: URL(fileURLWithPath: back)) == Data(contentsOf: URL(fileURLWithPath: Tools.fixtures + "/tiny-llama/model.safetensors")))
  }

  @Test func existingOutputNeedsOverwrite() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let out = dir + "/m.safetensors"
    try Data("keep me".utf8).write(to: URL(fileURLWithPath: out))
    let refused = try Tools.run("espalier-convert", [Tools.fixtures + "/tiny-llama", out])
    #expect(refused.status == 2)
    #expect(refused.stderr.contains("--overwrite"))
    #expect(try String(contentsOfFile: out, encoding: .utf8) == "keep me")
    let replaced = try Tools.run("espalier-convert", [Tools.fixtures + "/tiny-llama", out, "--overwrite"])
    #expect(replaced.status == 0, "\(replaced.stderr)")
    #expect(try SafetensorsFile(path: out).entries.count == 21)
  }

  @Test func failureLeavesNoOutput() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let r = try Tools.run("espalier-convert", [Tools.fixtures + "/gguf/adversarial/truncated_data.gguf", dir + "/out"])
    #expect(r.status == 2)
    #expect(r.stderr.contains("truncated_data.gguf"))
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    // A dtype HDF5 cannot hold fails after the file was started: nothing is left either.
    let f8 = dir + "/f8.safetensors"
    #expect(try Tools.run("espalier-convert", [Tools.fixtures + "/safetensors/all_dtypes.safetensors", dir + "/x.h5"]).status == 2)
    #expect(!FileManager.default.fileExists(atPath: f8))
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
  }

  @Test func usageErrors() throws {
    let r = try Tools.run("espalier-convert", [Tools.fixtures + "/tiny-llama", "/tmp/x", "--dtype", "int4"])
    #expect(r.status == 64)
    #expect(r.stderr.contains("--dtype"))
    let help = try Tools.run("espalier-convert", ["--help"])
    for flag in ["--dtype", "--max-shard-size", "--overwrite", "--json"] { #expect(help.stdout.contains(flag)) }
    #expect(help.stdout.contains("5GB"))
  }

  /// A 2:4-pruned model to GGUF in each block type, then `espalier verify` against the pruned source:
  /// sparsity and pattern hold, and every other tensor equals the source as the GGUF stores it. A zero
  /// filled in the file is caught (exit 1). Block types refuse a non-GGUF output (exit 64).
  @Test func prunedModelToGGUFVerifiesAgainstItsSource() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let pruned = dir + "/pruned"
    let prune = try Tools.run("espalier-prune", [Tools.fixtures + "/tiny-llama", pruned, "--method", "magnitude", "--pattern", "2:4"])
    #expect(prune.status == 0, "\(prune.stderr)")
    for type in ["q4_0", "q8_0", "bf16", "f32"] {
      let out = dir + "/m.\(type).gguf"
      let r = try Tools.run("espalier-convert", [pruned, out, "--dtype", type, "--json"])
      #expect(r.status == 0, "\(r.stderr)")
      let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
      #expect(report["output_format"] as? String == "gguf" && report["type"] as? String == type.uppercased())
      #expect(report["nudged_total"] is Int && report["nudged"] is [String: Any])
      let verify = try Tools.run("espalier-verify", [out, "--base", pruned, "--pattern", "2:4", "--sparsity", "0.5"])
      #expect(verify.status == 0, "\(type): \(verify.stdout)\(verify.stderr)")
    }
    // Fill one pruned zero of blk.0.attn_v (F32 in the f32 file): verify names it and fails.
    let f32 = dir + "/m.f32.gguf"
    let file = try GGUFFile(path: f32)
    let v = try #require(file.info("blk.0.attn_v.weight"))
    var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: f32)))
    let start = file.dataStart + v.offset
    let zero = try #require((0..<(v.byteCount / 4)).first { i in bytes[(start + 4 * i)..<(start + 4 * i + 4)].allSatisfy { $0 == 0 } })
    withUnsafeBytes(of: Float(0.5).bitPattern.littleEndian) { for k in 0..<4 { bytes[start + 4 * zero + k] = $0[k] } }
    try Data(bytes).write(to: URL(fileURLWithPath: f32))
    let tampered = try Tools.run("espalier-verify", [f32, "--base", pruned, "--json"])
    #expect(tampered.status == 1)
    #expect(tampered.stdout.contains("model.layers.0.self_attn.v_proj.weight") && tampered.stdout.contains("zeros filled"))
    let refused = try Tools.run("espalier-convert", [pruned, dir + "/x", "--dtype", "q4_0"])
    #expect(refused.status == 64 && refused.stderr.contains(".gguf"))
  }
}
