// espalier verify as a binary, the way CI runs it: a pruned model, its merge with a trained adapter and
// its compressed copy pass; each planted fault (a zero filled, an extra zero, a broken 2:4 group, a NaN,
// a value off the merge, a flipped bit in a compressed file, a truncated shard) fails with its exit code
// and a message naming the tensor.

import Foundation
import Testing

@testable import Formats

@Suite struct VerifyToolTests {
  static let tensor = "model.layers.1.mlp.up_proj.weight"

  /// The tiny model pruned 2:4 (F32), trained 2 LoRS steps, merged; returns (base, adapter, merged).
  static func pipeline(_ dir: String) throws -> (String, String, String) {
    let base = try FinetuneToolTests.prunedBase(dir)
    let train = try FinetuneToolTests.train(base, dir + "/adapter", ["--steps", "2"])
    #expect(train.status == 0, "\(train.stderr)")
    let merge = try Tools.run("espalier", ["merge", base, dir + "/adapter", dir + "/merged"])
    #expect(merge.status == 0, "\(merge.stderr)")
    return (base, dir + "/adapter", dir + "/merged")
  }

  /// Copies a checkpoint directory and replaces, in its model.safetensors (F32), the first element of
  /// `name` for which `replace` gives a value.
  static func planted(_ source: String, _ target: String, _ name: String = tensor, replace: (Float) -> Float?) throws {
    try FileManager.default.copyItem(atPath: source, toPath: target)
    let path = target + "/model.safetensors"
    let file = try SafetensorsFile(path: path)
    let entry = try #require(file.entry(name))
    let values = try file.tensor(name).float32()
    let index = try #require(values.firstIndex { replace($0) != nil })
    let offset = file.header.dataStart + entry.dataRange.lowerBound + index * 4
    var data = try Data(contentsOf: URL(fileURLWithPath: path))
    withUnsafeBytes(of: replace(values[index])!.bitPattern.littleEndian) { data.replaceSubrange(offset..<(offset + 4), with: $0) }
    try data.write(to: URL(fileURLWithPath: path))
  }

  func verify(_ arguments: [String]) throws -> ToolResult { try Tools.run("espalier", ["verify"] + arguments) }

  @Test func mergedAndCompressedCheckpointsPass() throws {
    let dir = try FinetuneToolTests.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (base, adapter, merged) = try Self.pipeline(dir)
    let r = try verify([merged, "--base", base, "--adapter", adapter, "--pattern", "2:4", "--sparsity", "0.5", "--json"])
    #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
    let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    #expect(report["passed"] as? Bool == true && report["method"] as? String == "lors")
    #expect(report["global_sparsity"] as? Double == 0.5)
    let tensors = try #require(report["tensors"] as? [[String: Any]])
    let adapted = tensors.filter { $0["adapter_mismatches"] != nil }
    #expect(adapted.count == 14, "every projection checked against the merge")
    #expect(adapted.allSatisfy { $0["adapter_mismatches"] as? Int == 0 && $0["zeros_filled"] as? Int == 0 })
    #expect(tensors.filter { $0["identical"] as? Bool == true }.count == tensors.count - 14)
    // The table, and the verdict on its last line.
    let table = try verify([merged, "--base", base, "--pattern", "2:4"])
    #expect(table.status == 0 && table.stdout.contains(Self.tensor) && table.stdout.hasSuffix("s)\n"))
    #expect(table.stdout.split(separator: "\n").last!.hasPrefix("PASS"))
    // Compressed, read directly, in each layout.
    for format in ["espalier", "sparse-bitmask", "sparse-24-bitmask"] {
      let c = try Tools.run("espalier", ["convert", merged, dir + "/c-" + format, "--compress", "--format", format])
      #expect(c.status == 0, "\(c.stderr)")
      let v = try verify([dir + "/c-" + format, "--base", base, "--adapter", adapter, "--pattern", "2:4"])
      #expect(v.status == 0, "\(format): \(v.stdout)")
      let inspect = try Tools.run("espalier", ["inspect", dir + "/c-" + format, "--pattern", "2:4"])
      #expect(inspect.status == 0 && inspect.stdout.contains("compressed: \(format), "), "\(inspect.stdout)")
    }
  }

  @Test func plantedFaultsFailWithTheRightMessage() throws {
    let dir = try FinetuneToolTests.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (base, adapter, merged) = try Self.pipeline(dir)
    // A zero filled: the base's zero set is not kept, and the 2:4 group that held it breaks.
    try Self.planted(merged, dir + "/filled") { $0 == 0 ? 0.25 : nil }
    var r = try verify([dir + "/filled", "--base", base, "--pattern", "2:4"])
    #expect(r.status == 1 && r.stdout.contains("1 of the base's zeros filled") && r.stdout.contains("1 of 2048 groups break 2:4"), "\(r.stdout)")
    r = try verify([dir + "/filled", "--pattern", "2:4"])
    #expect(r.status == 1 && r.stdout.contains("groups break 2:4"))
    // An extra zero: fails against the base, passes with --allow-new-zeros.
    try Self.planted(merged, dir + "/extra") { $0 != 0 ? 0 : nil }
    r = try verify([dir + "/extra", "--base", base])
    #expect(r.status == 1 && r.stdout.contains("1 new zeros"), "\(r.stdout)")
    #expect(try verify([dir + "/extra", "--base", base, "--allow-new-zeros"]).status == 0)
    // A NaN (kept weight, so the zero set is intact): only the non-finite check trips.
    try Self.planted(merged, dir + "/nan") { $0 != 0 ? .nan : nil }
    r = try verify([dir + "/nan", "--base", base, "--json"])
    #expect(r.status == 1 && r.stdout.contains("1 NaN/Inf values"))
    #expect(try verify([dir + "/nan", "--allow-nonfinite"]).status == 0)
    // A value off the merge by far more than half an ulp.
    try Self.planted(merged, dir + "/off") { $0 != 0 ? $0 * 1.001 : nil }
    r = try verify([dir + "/off", "--base", base, "--adapter", adapter])
    #expect(r.status == 1 && r.stdout.contains("1 values differ from base + adapter by more than half an ulp"), "\(r.stdout)")
    // An untouched tensor changed (a norm weight), and the sparsity minimum.
    try Self.planted(merged, dir + "/norm", "model.norm.weight") { $0 != 0 ? -$0 : nil }
    r = try verify([dir + "/norm", "--base", base, "--sparsity", "0.6"])
    #expect(r.status == 1 && r.stdout.contains("changed, but only projection weights may change") && r.stdout.contains("below the minimum 60.00%"))

    // An adapter trained on another base: a failed check, every mismatch listed.
    r = try verify([merged, "--base", dir + "/filled", "--adapter", adapter])
    #expect(r.status == 1 && r.stderr.contains("does not fit") && r.stderr.contains("trained on another base"), "\(r.stderr)")

    // One bit flipped in a compressed file: the frame checksum catches it, naming the tensor.
    #expect(try Tools.run("espalier", ["convert", merged, dir + "/c", "--compress"]).status == 0)
    let path = dir + "/c/model.safetensors"
    let file = try SafetensorsFile(path: path)
    let part = try #require(file.entry(Self.tensor + "#values"))
    var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
    bytes[file.header.dataStart + part.dataRange.lowerBound + part.dataRange.count / 2] ^= 0x04
    try bytes.write(to: URL(fileURLWithPath: path))
    r = try verify([dir + "/c", "--base", base])
    #expect(r.status == 1 && r.stdout.contains(Self.tensor) && r.stdout.contains("unreadable"), "\(r.stdout)")
    // A truncated shard: the checkpoint cannot be read at all.
    #expect(try Tools.run("espalier", ["convert", merged, dir + "/sharded", "--max-shard-size", "100KB"]).status == 0)
    let shards = try FileManager.default.contentsOfDirectory(atPath: dir + "/sharded").filter { $0.hasPrefix("model-") }.sorted()
    #expect(shards.count > 2)
    let shard = dir + "/sharded/" + shards[1]
    try Data(contentsOf: URL(fileURLWithPath: shard)).dropLast(10).write(to: URL(fileURLWithPath: shard))
    r = try verify([dir + "/sharded"])
    #expect(r.status == 2 && r.stderr.contains(shards[1]), "\(r.stderr)")
  }

  /// --junit: a JUnit XML report CI systems show as test results, valid against the Apache Ant JUnit schema
  /// (fixtures/junit/JUnit.xsd, checked with xmllint), a test case per check with the failure's message.
  @Test func junitReportFollowsTheSchema() throws {
    let dir = try FinetuneToolTests.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let base = try FinetuneToolTests.prunedBase(dir)
    // A broken 2:4 group and a filled zero in one tensor; a changed norm; markup characters in the path.
    try Self.planted(base, dir + "/bad <&\"'>") { $0 == 0 ? 0.25 : nil }
    let bad = dir + "/bad <&\"'>"
    func validate(_ report: String) throws -> String {
      let xmllint = try #require(["/usr/bin/xmllint", "/usr/local/bin/xmllint"].first { FileManager.default.isExecutableFile(atPath: $0) },
        "xmllint is missing: `make test` installs Debian's libxml2-utils")
      let r = try Tools.runExecutable(xmllint, ["--noout", "--schema", Tools.fixtures + "/junit/JUnit.xsd", report])
      #expect(r.status == 0, "\(r.stderr)")
      return try String(contentsOfFile: report, encoding: .utf8)
    }
    var r = try verify([bad, "--base", base, "--pattern", "2:4", "--sparsity", "0.45", "--junit", dir + "/bad.xml"])
    #expect(r.status == 1)
    let failing = try validate(dir + "/bad.xml")
    let tensors = try SafetensorsFile(path: base + "/model.safetensors").entries.count
    let cases = failing.components(separatedBy: "<testcase ").count - 1
    #expect(cases > 2 * tensors, "a case per check per tensor: \(cases) for \(tensors) tensors")
    #expect(failing.contains("tests=\"\(cases)\" failures=\"2\""), "\(failing.prefix(400))")
    // The planted tensor's two failed checks, each with its message; its other checks pass.
    let name = "classname=\"\(Self.tensor)\""
    #expect(failing.contains("<testcase \(name) name=\"pattern 2:4\" time=\"0\">\n      <failure message=\"1 of 2048 groups break 2:4\""))
    #expect(failing.contains("<testcase \(name) name=\"the base&apos;s zeros kept\" time=\"0\">\n      <failure message=\"1 of the base&apos;s zeros filled\""))
    #expect(failing.contains("<testcase \(name) name=\"finite\" time=\"0\"/>"))
    #expect(failing.contains("<testcase classname=\"checkpoint\" name=\"global sparsity at least 45.00%\" time=\"0\"/>"))
    #expect(failing.contains("<property name=\"model\" value=\"\(dir)/bad &lt;&amp;&quot;&apos;&gt;\"/>"))
    // A passing run: every case passes; the report is rewritten in place.
    r = try verify([base, "--pattern", "2:4", "--junit", dir + "/bad.xml"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(try validate(dir + "/bad.xml").contains("failures=\"0\""))
    // The report never replaces an input.
    r = try verify([base, "--junit", base + "/model.safetensors"])
    #expect(r.status == 64 && r.stderr.contains("--junit"), "\(r.stderr)")
  }

  @Test func usage() throws {
    let r = try verify(["x", "--adapter", "y"])
    #expect(r.status == 64 && r.stderr.contains("--adapter needs --base"))
    let help = try verify(["--help"])
    let text = help.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    for flag in ["--base", "--adapter", "--sparsity", "--pattern", "--allow-new-zeros", "--allow-nonfinite", "--junit", "--json", "Exit status: 0"] {
      #expect(text.contains(flag), "\(flag)")
    }
  }
}
