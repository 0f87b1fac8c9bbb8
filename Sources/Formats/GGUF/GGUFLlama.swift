// GGUF `llama` metadata -> the HF side files: config.json, generation_config.json, tokenizer.json and
// tokenizer_config.json (formats.md §4.4-4.5, §7), so a converted GGUF is a complete HF checkpoint.
// JSON is written as transformers writes it (indent 2, sorted keys, trailing newline). The parsed
// hyperparameters are a LlamaConfig, the same type config.json reads into.

public enum GGUFLlama {
  /// Reads the llama hyperparameters as a config; every missing required key is reported at once.
  public static func config(_ file: GGUFFile) throws(FormatError) -> LlamaConfig {
    let arch = file.metadata["general.architecture"]?.stringValue ?? ""
    guard arch == "llama" else { throw .unsupportedArchitecture(file: file.path, architecture: arch) }
    var missing: [FormatError] = []
    func int(_ key: String) -> Int {
      guard let v = file.metadata["llama." + key]?.intValue else {
        missing.append(.missingMetadata(file: file.path, key: "llama." + key))
        return 0
      }
      return v
    }
    func float(_ key: String) -> Float {
      guard let v = file.metadata["llama." + key]?.doubleValue else {
        missing.append(.missingMetadata(file: file.path, key: "llama." + key))
        return 0
      }
      return Float(v)
    }
    let hidden = int("embedding_length")
    let heads = int("attention.head_count")
    let scalingType = file.metadata["llama.rope.scaling.type"]?.stringValue
    let p = LlamaConfig(
      vocabSize: file.metadata["llama.vocab_size"]?.intValue
        ?? file.metadata["tokenizer.ggml.tokens"]?.arrayValue?.count ?? int("vocab_size"),
      hiddenSize: hidden,
      intermediateSize: int("feed_forward_length"),
      layers: int("block_count"),
      heads: heads,
      kvHeads: file.metadata["llama.attention.head_count_kv"]?.intValue ?? heads,
      headDim: file.metadata["llama.attention.key_length"]?.intValue
        ?? file.metadata["llama.rope.dimension_count"]?.intValue ?? (heads > 0 ? hidden / heads : 0),
      rmsNormEps: Double(float("attention.layer_norm_rms_epsilon")),
      ropeTheta: file.metadata["llama.rope.freq_base"]?.doubleValue ?? 10000,
      ropeScaling: scalingType.flatMap { type in
        type == "none" ? nil : RopeScaling(
          type: type, factor: file.metadata["llama.rope.scaling.factor"]?.doubleValue ?? 1, lowFreqFactor: 1,
          highFreqFactor: 4,
          originalMaxPositionEmbeddings: file.metadata["llama.rope.scaling.original_context_length"]?.intValue ?? 8192)
      },
      maxPositionEmbeddings: int("context_length"),
      tieWordEmbeddings: file.info("output.weight") == nil,
      attentionBias: file.info("blk.0.attn_q.bias") != nil,
      bosTokenID: file.metadata["tokenizer.ggml.bos_token_id"]?.intValue,
      eosTokenIDs: file.metadata["tokenizer.ggml.eos_token_id"]?.intValue.map { [$0] } ?? [],
      padTokenID: file.metadata["tokenizer.ggml.padding_token_id"]?.intValue,
      outputBias: file.info("blk.0.attn_output.bias") != nil)
    if !missing.isEmpty { throw FormatError.many(missing).flattened }
    try p.checkValues(file: file.path) { ggufKeys[$0] ?? $0 }
    return p
  }

  /// The GGUF key each config field is read from, for messages that name what the file holds.
  static let ggufKeys: [String: String] = [
    "vocab_size": "llama.vocab_size (or the length of tokenizer.ggml.tokens)", "hidden_size": "llama.embedding_length",
    "intermediate_size": "llama.feed_forward_length", "num_hidden_layers": "llama.block_count",
    "num_attention_heads": "llama.attention.head_count", "num_key_value_heads": "llama.attention.head_count_kv",
    "head_dim": "llama.attention.key_length", "max_position_embeddings": "llama.context_length",
    "rms_norm_eps": "llama.attention.layer_norm_rms_epsilon", "rope_theta": "llama.rope.freq_base",
    "rope_scaling.factor": "llama.rope.scaling.factor",
    "rope_scaling.original_max_position_embeddings": "llama.rope.scaling.original_context_length",
    "bos_token_id": "tokenizer.ggml.bos_token_id", "eos_token_id": "tokenizer.ggml.eos_token_id",
    "pad_token_id": "tokenizer.ggml.padding_token_id",
  ]

  /// A float from f32 metadata as its shortest decimal form (1e-05, not 9.99999974e-06).
  static func number(_ x: Float) -> JSONValue {
    var text = x.description
    if !text.contains(".") && !text.contains("e") { text += ".0" }
    return .number(text)
  }
  static func number(_ x: Int) -> JSONValue { .number(String(x)) }

  /// config.json as transformers writes it. Floats are printed at f32 precision (GGUF stores f32).
  public static func configJSON(_ p: LlamaConfig) -> String {
    var o = JSONObject()
    o["architectures"] = .array([.string("LlamaForCausalLM")])
    o["model_type"] = .string("llama")
    o["attention_bias"] = .bool(p.attentionBias)
    o["attention_dropout"] = .number("0.0")
    if let bos = p.bosTokenID { o["bos_token_id"] = number(bos) }
    if let eos = p.eosTokenIDs.first { o["eos_token_id"] = number(eos) }
    if let pad = p.padTokenID { o["pad_token_id"] = number(pad) }
    o["head_dim"] = number(p.headDim)
    o["hidden_act"] = .string("silu")
    o["hidden_size"] = number(p.hiddenSize)
    o["intermediate_size"] = number(p.intermediateSize)
    o["max_position_embeddings"] = number(p.maxPositionEmbeddings)
    o["mlp_bias"] = .bool(false)
    o["num_attention_heads"] = number(p.heads)
    o["num_hidden_layers"] = number(p.layers)
    o["num_key_value_heads"] = number(p.kvHeads)
    o["rms_norm_eps"] = number(Float(p.rmsNormEps))
    if let s = p.ropeScaling {
      o["rope_scaling"] = .object(JSONObject([
        ("rope_type", .string(s.type)), ("factor", number(Float(s.factor))),
        ("original_max_position_embeddings", number(s.originalMaxPositionEmbeddings)),
      ]))
    } else {
      o["rope_scaling"] = .null
    }
    o["rope_theta"] = number(Float(p.ropeTheta))
    o["tie_word_embeddings"] = .bool(p.tieWordEmbeddings)
    o["torch_dtype"] = .string("float32")
    o["use_cache"] = .bool(true)
    o["vocab_size"] = number(p.vocabSize)
    return JSONWriter.pretty(.object(o)) + "\n"
  }

  public static func generationConfigJSON(_ p: LlamaConfig) -> String {
    var o = JSONObject([("_from_model_config", .bool(true))])
    if let bos = p.bosTokenID { o["bos_token_id"] = number(bos) }
    if let eos = p.eosTokenIDs.first { o["eos_token_id"] = number(eos) }
    if let pad = p.padTokenID { o["pad_token_id"] = number(pad) }
    return JSONWriter.pretty(.object(o)) + "\n"
  }
}
