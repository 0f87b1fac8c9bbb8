// Our GGUF quantisers against ggml's own reference quantisers (quantize_row_*_ref, called in the C
// library of llama-cpp-python by fixtures/make_llamacpp_goldens.py): the same bytes with the nudge off;
// with it on, the same bytes wherever no kept weight would vanish, and the source's zeros exactly.

import Foundation
import Testing

@testable import Formats

@Suite struct GGMLQuantizerTests {
  static func hexBytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var i = hex.startIndex
    while i < hex.endIndex {
      let j = hex.index(i, offsetBy: 2)
      out.append(UInt8(hex[i..<j], radix: 16)!)
      i = j
    }
    return out
  }

  static let cases: [(String, GGMLType)] = [("q8_0", .q8_0), ("q4_0", .q4_0), ("q6_K", .q6_K)]

  @Test(arguments: cases)
  func sameBytesAsGGMLsReferenceQuantiser(name: String, type: GGMLType) throws {
    let golden = try Fixtures.json("gguf/llamacpp_goldens.json")
    let rows = try #require((golden["quantizers"] as? [String: Any])?[name] as? [String: [String: String]])
    #expect(rows.count == 5)
    for (label, row) in rows.sorted(by: { $0.key < $1.key }) {
      let input = Self.hexBytes(row["input"]!).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
      let expected = Self.hexBytes(row["output"]!)
      var plain = [UInt8](repeating: 0xAA, count: expected.count)
      _ = input.withUnsafeBufferPointer { x in plain.withUnsafeMutableBytes { GGUFQuantize.quantize(type, x.baseAddress!, count: 256, into: $0.baseAddress!, keepNonZero: false) } }
      #expect(plain == expected, "\(name) \(label): ggml's reference quantiser")

      var kept = [UInt8](repeating: 0xAA, count: expected.count)
      let counts = input.withUnsafeBufferPointer { x in kept.withUnsafeMutableBytes { GGUFQuantize.quantize(type, x.baseAddress!, count: 256, into: $0.baseAddress!) } }
      var decoded = [Float](repeating: .nan, count: 256)
      _ = kept.withUnsafeBytes { GGUFQuants.dequantize(type, from: $0, to: &decoded, count: 256) }
      #expect(zip(input, decoded).allSatisfy { ($0 == 0) == ($1 == 0) }, "\(name) \(label): zeros exactly the source's")
      #expect(zip(input, decoded).allSatisfy { $0 == 0 || ($0 > 0) == ($1 > 0) }, "\(name) \(label): signs kept")
      if counts.nudged == 0 { #expect(kept == expected, "\(name) \(label): nothing vanished, so ggml's bytes") }
      if label == "tiny_kept" { #expect(counts.nudged > 0, "\(name): kept weights far below a step are nudged") }
      if label == "zeros" { #expect(kept == expected && counts.nudged == 0) }
    }
  }

  /// The files whose logits llama.cpp computed (GGUFExportLogitsTests) are byte for byte our exports.
  @Test func llamaCppReadOurExactFiles() throws {
    let golden = try Fixtures.json("gguf/llamacpp_goldens.json")
    let loads = try #require(golden["loads"] as? [String: [String: Any]])
    #expect(Set(loads.keys) == ["f32", "f16", "q8_0", "q4_0"])
    let dir = try TemporaryDirectory()
    for (name, type) in [("f32", GGMLType.f32), ("f16", .f16), ("q8_0", .q8_0), ("q4_0", .q4_0)] {
      _ = try GGUFExport.export(try Checkpoint.open(Fixtures.path("tiny-llama")), to: dir.file(name), type: type)
      let digest = try readBytes(dir.file(name)).withUnsafeBytes { sha256Hex($0) }
      #expect(digest == loads[name]?["file_sha256"] as? String, "\(name): llama.cpp read another file; rerun fixtures/make_llamacpp_goldens.py")
    }
  }
}
