// The byte-level BPE tokenizer against the Python `tokenizers` package (fixtures/make_tokenizer_goldens.py):
// 151 edge cases (pieces, ids, decoded text) and 110 KB of real prose, for the tiny fixture tokenizer and
// for SmolLM2's, which is built from the GGUF's metadata by our converter.

import Foundation
import Testing

@testable import Formats

@Suite struct TokenizerTests {
  static let smollm2GGUF = SmolLM2Tests.ggufPath

  static func smollm2() throws -> Tokenizer {
    let gguf = try GGUFFile(path: smollm2GGUF)
    let files = try GGUFTokenizer.files(gguf, contextLength: 8192)
    return try Tokenizer(json: try JSONParser.parse(Array(files.tokenizerJSON.utf8)), file: "smollm2")
  }

  static func cases(_ file: String) throws -> [[String: Any]] {
    let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("tokenizer/" + file)))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
  }

  /// The `decoded` strings, read with our own JSON parser: Foundation's drops a raw U+FEFF inside strings.
  static func decodedStrings(_ file: String) throws -> [String: String] {
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("tokenizer/" + file))))
    var out: [String: String] = [:]
    for row in try #require(try JSONParser.parse(bytes).arrayValue) {
      let o = try #require(row.objectValue)
      out[try #require(o["name"]?.stringValue)] = o["decoded"]?.stringValue
    }
    return out
  }

  func checkCases(_ tokenizer: Tokenizer, _ file: String) throws {
    let rows = try Self.cases(file)
    let decodedGoldens = try Self.decodedStrings(file)
    #expect(rows.count >= 100)
    var failures: [String] = []
    for row in rows {
      let name = row["name"] as! String
      let text = try #require((try Self.cases("cases.json")).first { $0["name"] as? String == name }?["text"] as? String)
      let ids = (row["ids"] as! [Int]).map(Int32.init)
      if tokenizer.encode(text) != ids { failures.append("\(name): ids \(tokenizer.encode(text)) != \(ids)") }
      let pieces = row["pieces"] as? [String] ?? []
      let ours = tokenizer.splitAddedTokens(text).flatMap { segment -> [String] in
        if case .text(let t) = segment { return tokenizer.preTokenizer.split(t) }
        return []
      }
      if !pieces.isEmpty && ours != pieces.filter({ p in !tokenizer.addedTokens.contains { $0.content == p } }) {
        failures.append("\(name): pieces \(ours) != \(pieces)")
      }
      let decoded = tokenizer.decode(ids)
      if decoded != decodedGoldens[name] { failures.append("\(name): decode \(decoded.debugDescription)") }
    }
    #expect(failures.isEmpty, "\(failures.prefix(8))")
  }

  func checkProse(_ tokenizer: Tokenizer, _ file: String) throws {
    let text = try String(contentsOfFile: Fixtures.path("tokenizer/prose.txt"), encoding: .utf8)
    #expect(text.utf8.count >= 100_000)
    let golden = try Fixtures.json("tokenizer/" + file)
    let ids = try #require(golden["ids"] as? [Int]).map(Int32.init)
    let ours = tokenizer.encode(text)
    #expect(ours.count == ids.count)
    let first = zip(ours, ids).enumerated().first { $1.0 != $1.1 }?.offset
    #expect(first == nil, "first difference at token \(first ?? -1)")
    #expect(tokenizer.decode(ours) == text)
  }

  @Test func byteAlphabetMatchesTokenizers() throws {
    let table = try #require((try Fixtures.json("tokenizer/manifest.json")["byte_to_unicode"] as? [String: Any])?["code_points"] as? [Int])
    #expect(ByteLevel.table.map { Int($0.value) } == table)
  }

  @Test func tinyTokenizerCases() throws {
    try checkCases(try Tokenizer(contentsOf: Fixtures.path("tiny-llama")), "tiny_ids.json")
  }

  @Test func tinyTokenizerProse() throws {
    try checkProse(try Tokenizer(contentsOf: Fixtures.path("tiny-llama")), "prose_ids_tiny.json")
  }

  @Test(.enabled(if: SmolLM2Tests.available, "models/SmolLM2-135M-Instruct.Q4_1.gguf is absent: run `make test` or `make smollm2`"))
  func smollm2Cases() throws {
    try checkCases(try Self.smollm2(), "smollm2_ids.json")
  }

  @Test(.enabled(if: SmolLM2Tests.available, "models/SmolLM2-135M-Instruct.Q4_1.gguf is absent: run `make test` or `make smollm2`"))
  func smollm2ProseAndKnownIDs() throws {
    let tokenizer = try Self.smollm2()
    try checkProse(tokenizer, "prose_ids_smollm2.json")
    #expect(tokenizer.encode("Hello, we can use") == [19556, 28, 392, 416, 722])
    #expect(tokenizer.encode("\n") == [198])
    #expect(tokenizer.encode("Hello world! 123") == [19556, 905, 17, 216, 33, 34, 35])
  }

  @Test func decodeProbes() throws {
    let tokenizer = try Tokenizer(contentsOf: Fixtures.path("tiny-llama"))
    let probes = try #require(try Fixtures.json("tokenizer/decode_probes.json")["tiny"] as? [String: Any])
    for probe in try #require(probes["per_token_and_prefix"] as? [[String: Any]]) {
      let ids = (probe["ids"] as! [Int]).map(Int32.init)
      let prefixes = probe["prefixes"] as! [String]
      for k in 1...ids.count {
        #expect(tokenizer.decode(Array(ids.prefix(k))) == prefixes[k - 1], "\(probe["name"] ?? "")[\(k)]")
      }
    }
  }

  @Test func unsupportedTokenizersAreExplained() throws {
    let json = try JSONParser.parse(Array(#"{"model": {"type": "Unigram", "vocab": []}}"#.utf8))
    #expect(throws: FormatError.self) { _ = try Tokenizer(json: json, file: "x") }
  }

  /// The prompt prefix: Llama 3's TemplateProcessing (inside a Sequence, as its tokenizer.json has it), or
  /// tokenizer_config.json's add_bos_token; none for a ByteLevel post-processor (SmolLM2).
  @Test func promptPrefixComesFromThePostProcessorOrAddBOS() throws {
    func tokenizer(_ postProcessor: String) throws -> Tokenizer {
      let text = """
        {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
         "added_tokens": [{"id": 3, "content": "<|begin_of_text|>", "special": true}],
         "post_processor": \(postProcessor)}
        """
      return try Tokenizer(json: try JSONParser.parse(Array(text.utf8)), file: "t")
    }
    let template = """
      {"type": "Sequence", "processors": [{"type": "ByteLevel"}, {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [3], "tokens": ["<|begin_of_text|>"]}}}]}
      """
    let llama3 = try tokenizer(template)
    #expect(llama3.promptPrefix == [3])
    #expect(llama3.encodePrompt("ab") == [3, 2])
    #expect(llama3.encode("ab") == [2])
    let plain = try tokenizer(#"{"type": "ByteLevel"}"#)
    #expect(plain.promptPrefix.isEmpty)
    plain.addBOS(from: try JSONParser.parse(Array(#"{"add_bos_token": true, "bos_token": {"content": "<|begin_of_text|>"}}"#.utf8)))
    #expect(plain.promptPrefix == [3])
    let off = try tokenizer("null")
    off.addBOS(from: try JSONParser.parse(Array(#"{"add_bos_token": false, "bos_token": "<|begin_of_text|>"}"#.utf8)))
    #expect(off.promptPrefix.isEmpty)
  }
}
