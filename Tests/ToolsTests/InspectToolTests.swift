// espalier-inspect and the espalier dispatcher, run as binaries on the committed fixtures.

import Foundation
import Testing

@Suite struct InspectToolTests {
  @Test func listsTheTinyLlama() throws {
    let r = try Tools.run("espalier-inspect", [Tools.fixtures + "/tiny-llama"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stdout.contains("model.layers.1.mlp.down_proj.weight"))
    #expect(r.stdout.contains("F32"))
    #expect(r.stdout.contains("[64, 128]"))
    #expect(r.stdout.contains("tensors: 21"))
  }

  @Test func jsonReportOnStdout() throws {
    let r = try Tools.run("espalier-inspect", [Tools.fixtures + "/safetensors/sharded", "--json", "--pattern", "2:4"])
    #expect(r.status == 0, "\(r.stderr)")
    let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    #expect(object["tensor_count"] as? Int == 7)
    #expect(object["bytes"] as? Int == 4800)
    #expect((object["files"] as? [String])?.count == 3)
    let pattern = try #require(object["pattern"] as? [String: Any])
    #expect(pattern["pattern"] as? String == "2:4")
    #expect((pattern["checked"] as? Int ?? 0) > 0)
    let tensors = try #require(object["tensors"] as? [[String: Any]])
    #expect(tensors.allSatisfy { $0["sparsity"] != nil })
  }

  @Test func sparsityAndPatternOfAPrunedFile() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-inspect-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    // A 2x8 F32 tensor that conforms to 2:4 with -0.0 among its zeros, and one that breaks a group.
    func f32(_ values: [Float]) -> [UInt8] { values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }
    let good = f32([0, -0.0, 1, 2, 3, 0, 0, 4, 0, 0, 5, 6, 7, 8, 0, 0])
    let bad = f32([1, 1, 1, 0, 0, 0, 1, 1])
    let header = #"{"bad":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]},"good":{"dtype":"F32","shape":[2,8],"data_offsets":[32,96]}}"#
    var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian, Array.init)
    bytes += Array(header.utf8) + bad + good
    let path = dir.appendingPathComponent("pruned.safetensors").path
    try Data(bytes).write(to: URL(fileURLWithPath: path))

    let r = try Tools.run("espalier-inspect", [path, "--pattern", "2:4"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stdout.contains("50.00%"))
    #expect(r.stdout.contains("1/2 groups fail"))
    #expect(r.stdout.contains("2:4: 1 of 2 tensors of rank >= 2 conform"))
    #expect(r.stdout.contains("sparsity: 45.83% (11 zeros of 24)"))
  }

  @Test func unreadableInputExitsTwoAndNamesTheFile() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-bad-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent("truncated.safetensors").path
    var bytes = try Data(contentsOf: URL(fileURLWithPath: Tools.fixtures + "/safetensors/writer_vectors/i32_test.safetensors"))
    bytes.removeLast(2)
    try bytes.write(to: URL(fileURLWithPath: path))
    let r = try Tools.run("espalier-inspect", [path])
    #expect(r.status == 2)
    #expect(r.stderr.contains(path))
    #expect(r.stderr.contains("incomplete metadata"))
    #expect(r.stdout.isEmpty)
  }

  @Test func usageErrorsExit64() throws {
    let r = try Tools.run("espalier-inspect", [Tools.fixtures + "/tiny-llama", "--pattern", "5:4"])
    #expect(r.status == 64)
    #expect(r.stderr.contains("5:4"))
  }

  @Test func helpExplainsEveryFlag() throws {
    let r = try Tools.run("espalier-inspect", ["--help"])
    #expect(r.status == 0)
    for flag in ["--pattern", "--headers-only", "--json"] { #expect(r.stdout.contains(flag)) }
  }

  @Test func inspectsGGUFAndHDF5() throws {
    let gguf = try Tools.run("espalier-inspect", [Tools.fixtures + "/gguf/tiny-llama.q8_0.gguf", "--json"])
    #expect(gguf.status == 0, "\(gguf.stderr)")
    let g = try #require(try JSONSerialization.jsonObject(with: Data(gguf.stdout.utf8)) as? [String: Any])
    #expect(g["tensor_count"] as? Int == 21)
    #expect((g["tensors"] as? [[String: Any]])?.contains { $0["name"] as? String == "model.layers.1.self_attn.k_proj.weight" } == true)
    let h5 = try Tools.run("espalier-inspect", [Tools.fixtures + "/hdf5/keras_legacy.h5"])
    #expect(h5.status == 0, "\(h5.stderr)")
    #expect(h5.stdout.contains("dense/dense/kernel:0"))
  }

  @Test func headersOnlyReadsNoData() throws {
    let r = try Tools.run("espalier-inspect", [Tools.fixtures + "/tiny-llama/model.safetensors", "--headers-only", "--json"])
    #expect(r.status == 0)
    let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    #expect(object["sparsity"] == nil)
    #expect(object["tensor_count"] as? Int == 21)
  }
}

@Suite struct DispatcherTests {
  @Test func dispatchesToTheVerbExecutable() throws {
    let direct = try Tools.run("espalier-inspect", [Tools.fixtures + "/tiny-llama", "--json"])
    let dispatched = try Tools.run("espalier", ["inspect", Tools.fixtures + "/tiny-llama", "--json"])
    #expect(dispatched.status == 0)
    #expect(dispatched.stdout == direct.stdout)
  }

  @Test func exitStatusPassesThrough() throws {
    let r = try Tools.run("espalier", ["inspect", "/nonexistent/model.safetensors"])
    #expect(r.status == 2)
  }

  @Test func unknownVerbIsAUsageError() throws {
    let r = try Tools.run("espalier", ["frobnicate"])
    #expect(r.status == 64)
    #expect(r.stderr.contains("not an espalier command"))
    #expect(r.stderr.contains("inspect"))
  }

  @Test func helpListsTheCommands() throws {
    let r = try Tools.run("espalier", ["--help"])
    #expect(r.status == 0)
    #expect(r.stdout.contains("inspect"))
    let verbHelp = try Tools.run("espalier", ["help", "inspect"])
    #expect(verbHelp.status == 0)
    #expect(verbHelp.stdout.contains("--pattern"))
  }
}
