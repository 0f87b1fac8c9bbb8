// HF tokenizer files -> `tokenizer.ggml.*` metadata (formats.md §4.5), as llama.cpp's converter writes
// it for a byte-level BPE vocabulary (`_set_vocab_gpt2` + `SpecialVocab`): one token per embedding row
// (holes become `[PAD{i}]`, UNUSED), token types (CONTROL for special added tokens, USER_DEFINED for the
// other added ones), merges as "left right" in rank order, the pre-tokenizer's llama.cpp name, the
// special token ids (tokenizer_config.json first, then config.json), add_bos/add_eos and the chat
// template. The reverse of GGUFTokenizer.

extension GGUFExport {
  static let tokenNormal: Int32 = 1
  static let tokenControl: Int32 = 3
  static let tokenUserDefined: Int32 = 4
  static let tokenUnused: Int32 = 5

  /// llama.cpp's name for a tokenizer.json pre-tokenizer we can recognise, or nil.
  static func preTokenizerName(_ pre: JSONValue?) -> String? {
    guard let pre = pre?.objectValue else { return nil }
    func isByteLevel(_ o: JSONObject?) -> Bool {
      o?["type"]?.stringValue == "ByteLevel" && o?["add_prefix_space"]?.boolValue != true && o?["use_regex"]?.boolValue != false
    }
    if isByteLevel(pre) { return "gpt-2" }
    if pre["type"]?.stringValue == "Sequence", let parts = pre["pretokenizers"]?.arrayValue?.map(\.objectValue), parts.count == 2,
      parts[0]?["type"]?.stringValue == "Digits", parts[0]?["individual_digits"]?.boolValue == true, isByteLevel(parts[1])
    {
      return "smollm"
    }
    return nil
  }

  /// The `tokenizer.*` keys, and notes on what could not be carried.
  static func tokenizerMetadata(
    _ sides: [SideFile], config: LlamaConfig, checkpoint: String
  ) throws(FormatError) -> ([(key: String, value: GGUFValue)], [String]) {
    guard let root = try jsonObject(sides, "tokenizer.json", checkpoint: checkpoint) else {
      return ([], ["no tokenizer.json beside the weights: the GGUF has no tokenizer, so llama.cpp cannot load it for text"])
    }
    func refuse(_ reason: String) -> FormatError { .io(file: checkpoint, reason: "tokenizer.json: \(reason)") }
    guard let model = root["model"]?.objectValue, model["type"]?.stringValue == "BPE", let vocab = model["vocab"]?.objectValue else {
      throw refuse("GGUF output writes byte-level BPE vocabularies (model.type BPE with a vocab)")
    }
    guard let pre = preTokenizerName(root["pre_tokenizer"]) else {
      throw refuse("its pre_tokenizer is not one we can name for llama.cpp (we know ByteLevel → gpt-2 and Digits + ByteLevel → smollm)")
    }
    var tokens = [String?](repeating: nil, count: config.vocabSize)
    var types = [Int32](repeating: tokenNormal, count: config.vocabSize)
    func place(_ token: String, _ id: Int, _ type: Int32) throws(FormatError) {
      guard id >= 0, id < config.vocabSize else {
        throw refuse("token `\(token)` has id \(id), outside the embedding's \(config.vocabSize) rows")
      }
      tokens[id] = token
      types[id] = type
    }
    for token in vocab.keys {
      guard let id = vocab[token]?.intValue else { throw refuse("vocab entry `\(token)` has no integer id") }
      try place(token, id, tokenNormal)
    }
    var addedIDs: [String: Int] = [:]
    for entry in root["added_tokens"]?.arrayValue ?? [] {
      guard let e = entry.objectValue, let id = e["id"]?.intValue, let content = e["content"]?.stringValue else {
        throw refuse("malformed added token")
      }
      try place(content, id, e["special"]?.boolValue == true ? tokenControl : tokenUserDefined)
      addedIDs[content] = id
    }
    var notes: [String] = []
    var holes = 0
    for id in 0..<config.vocabSize where tokens[id] == nil {
      tokens[id] = "[PAD\(id)]"
      types[id] = tokenUnused
      holes += 1
    }
    if holes > 0 { notes.append("\(holes) embedding rows have no token; written as [PAD{id}] (UNUSED), as llama.cpp's converter does") }

    var merges: [GGUFValue] = []
    for merge in model["merges"]?.arrayValue ?? [] {
      if let text = merge.stringValue {
        merges.append(.string(text))
      } else if let pair = merge.arrayValue?.compactMap(\.stringValue), pair.count == 2 {
        merges.append(.string(pair[0] + " " + pair[1]))
      } else {
        throw refuse("a merge is neither \"left right\" nor [left, right]")
      }
    }

    var m: [(key: String, value: GGUFValue)] = [
      ("tokenizer.ggml.model", .string("gpt2")),
      ("tokenizer.ggml.pre", .string(pre)),
      ("tokenizer.ggml.tokens", .array(elementType: 8, tokens.map { .string($0!) })),
      ("tokenizer.ggml.token_type", .array(elementType: 5, types.map { .int32($0) })),
    ]
    if !merges.isEmpty { m.append(("tokenizer.ggml.merges", .array(elementType: 8, merges))) }

    // Special ids: tokenizer_config.json's `<kind>_token` (a string or {content}), else config.json's ids.
    let tokenizerConfig = try jsonObject(sides, "tokenizer_config.json", checkpoint: checkpoint) ?? JSONObject()
    func configuredID(_ kind: String) -> Int? {
      let value = tokenizerConfig["\(kind)_token"]
      guard let content = value?.stringValue ?? value?.objectValue?["content"]?.stringValue else { return nil }
      return addedIDs[content] ?? vocab[content]?.intValue
    }
    let fallback: [String: Int?] = ["bos": config.bosTokenID, "eos": config.eosTokenIDs.first, "unk": nil, "pad": config.padTokenID]
    for (kind, key) in [("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")] {
      if let id = configuredID(kind) ?? fallback[kind] ?? nil, id >= 0, id < config.vocabSize {
        m.append(("tokenizer.ggml.\(key)_token_id", .uint32(UInt32(id))))
      }
    }
    m.append(("tokenizer.ggml.add_bos_token", .bool(tokenizerConfig["add_bos_token"]?.boolValue ?? false)))
    m.append(("tokenizer.ggml.add_eos_token", .bool(tokenizerConfig["add_eos_token"]?.boolValue ?? false)))
    if let template = tokenizerConfig["chat_template"]?.stringValue {
      m.append(("tokenizer.chat_template", .string(template)))
    } else if let jinja = sides.first(where: { $0.name == "chat_template.jinja" }) {
      m.append(("tokenizer.chat_template", .string(try jinja.text())))
    }
    return (m, notes)
  }
}
