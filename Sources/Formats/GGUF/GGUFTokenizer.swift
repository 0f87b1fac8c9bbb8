// GGUF tokenizer metadata (`tokenizer.ggml.*`, BPE "gpt2" model) -> HF tokenizer.json and
// tokenizer_config.json (formats.md §4.5, §7). Tokens are already in the byte-level alphabet (`Ġthe`);
// CONTROL tokens become special added tokens, USER_DEFINED ones plain added tokens.

public struct GGUFTokenizerFiles: Sendable {
  public var tokenizerJSON: String
  public var tokenizerConfigJSON: String
}

public enum GGUFTokenizer {
  static let typeControl = 3
  static let typeUserDefined = 4

  /// The pre-tokenizer of each `tokenizer.ggml.pre` value we can express in tokenizer.json.
  static func preTokenizer(_ pre: String) -> JSONValue? {
    let byteLevel = JSONValue.object(JSONObject([
      ("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)), ("trim_offsets", .bool(true)),
      ("use_regex", .bool(true)),
    ]))
    switch pre {
    case "smollm":
      let digits = JSONValue.object(JSONObject([("type", .string("Digits")), ("individual_digits", .bool(true))]))
      return .object(JSONObject([("type", .string("Sequence")), ("pretokenizers", .array([digits, byteLevel]))]))
    case "gpt-2", "default": return byteLevel
    default: return nil
    }
  }

  /// Builds the files, or throws when the file has no BPE tokenizer we can express.
  public static func files(_ file: GGUFFile, contextLength: Int) throws(FormatError) -> GGUFTokenizerFiles {
    let m = file.metadata
    guard m["tokenizer.ggml.model"]?.stringValue == "gpt2" else {
      throw .missingMetadata(file: file.path, key: "tokenizer.ggml.model = gpt2 (byte-level BPE)")
    }
    guard let tokens = m["tokenizer.ggml.tokens"]?.arrayValue?.compactMap(\.stringValue) else {
      throw .missingMetadata(file: file.path, key: "tokenizer.ggml.tokens")
    }
    let pre = m["tokenizer.ggml.pre"]?.stringValue ?? "default"
    guard let preTokenizer = preTokenizer(pre) else {
      throw .missingMetadata(file: file.path, key: "tokenizer.ggml.pre of a known kind (smollm, gpt-2), not `\(pre)`")
    }
    let types = m["tokenizer.ggml.token_type"]?.arrayValue?.map { $0.intValue ?? 1 } ?? []
    let merges = m["tokenizer.ggml.merges"]?.arrayValue?.compactMap(\.stringValue) ?? []

    var added: [JSONValue] = []
    var addedDecoder = JSONObject()
    var vocab = JSONObject()
    for (id, token) in tokens.enumerated() {
      if vocab[token] == nil { vocab[token] = .number(String(id)) }
      let type = id < types.count ? types[id] : 1
      guard type == typeControl || type == typeUserDefined else { continue }
      let entry = JSONObject([
        ("content", .string(token)), ("lstrip", .bool(false)), ("normalized", .bool(false)),
        ("rstrip", .bool(false)), ("single_word", .bool(false)), ("special", .bool(type == typeControl)),
      ])
      var withID = JSONObject([("id", .number(String(id)))])
      for k in ["content", "single_word", "lstrip", "rstrip", "normalized", "special"] { withID[k] = entry[k] }
      added.append(.object(withID))
      addedDecoder[String(id)] = .object(entry)
    }
    let mergePairs: [JSONValue] = merges.map { line in
      let parts = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
      return .array(parts.map { .string($0) })
    }
    let byteLevel = { (prefix: Bool, trim: Bool) in
      JSONValue.object(JSONObject([
        ("type", .string("ByteLevel")), ("add_prefix_space", .bool(prefix)), ("trim_offsets", .bool(trim)),
        ("use_regex", .bool(true)),
      ]))
    }
    let model = JSONObject([
      ("type", .string("BPE")), ("dropout", .null), ("unk_token", .null), ("continuing_subword_prefix", .null),
      ("end_of_word_suffix", .null), ("fuse_unk", .bool(false)), ("byte_fallback", .bool(false)),
      ("ignore_merges", .bool(false)), ("vocab", .object(vocab)), ("merges", .array(mergePairs)),
    ])
    let tokenizer = JSONObject([
      ("version", .string("1.0")), ("truncation", .null), ("padding", .null), ("added_tokens", .array(added)),
      ("normalizer", .null), ("pre_tokenizer", preTokenizer), ("post_processor", byteLevel(false, false)),
      ("decoder", byteLevel(true, true)), ("model", .object(model)),
    ])

    func tokenText(_ key: String) -> JSONValue? {
      guard let id = m["tokenizer.ggml.\(key)_token_id"]?.intValue, id >= 0, id < tokens.count else { return nil }
      return .string(tokens[id])
    }
    var config = JSONObject()
    config["add_bos_token"] = .bool(m["tokenizer.ggml.add_bos_token"]?.boolValue ?? false)
    config["add_eos_token"] = .bool(m["tokenizer.ggml.add_eos_token"]?.boolValue ?? false)
    config["added_tokens_decoder"] = .object(addedDecoder)
    config["bos_token"] = tokenText("bos")
    if let template = m["tokenizer.chat_template"]?.stringValue { config["chat_template"] = .string(template) }
    config["clean_up_tokenization_spaces"] = .bool(false)
    config["eos_token"] = tokenText("eos")
    config["model_max_length"] = .number(String(contextLength))
    config["pad_token"] = tokenText("padding")
    config["tokenizer_class"] = .string("PreTrainedTokenizerFast")
    config["unk_token"] = tokenText("unknown")
    return GGUFTokenizerFiles(
      tokenizerJSON: JSONWriter.pretty(.object(tokenizer), sortKeys: false) + "\n",
      tokenizerConfigJSON: JSONWriter.pretty(.object(config)) + "\n")
  }
}
