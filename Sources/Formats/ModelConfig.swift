// config.json of the Llama family (LlamaForCausalLM and look-alikes: SmolLM2, Mistral, Qwen2-style biases,
// Qwen3's per-head q/k norms, Gemma 3's text model), read strictly: every missing required key is reported at once, each naming
// the file.

public struct RopeScaling: Equatable, Sendable {
  /// "llama3" (frequency-dependent), "linear", or another HF rope type (rejected by the engine).
  public var type: String
  public var factor: Double
  public var lowFreqFactor: Double
  public var highFreqFactor: Double
  public var originalMaxPositionEmbeddings: Int
}

public struct LlamaConfig: Equatable, Sendable {
  /// config.json's model_type values the engine runs.
  public static let supportedModelTypes = ["llama", "mistral", "qwen2", "qwen3", "gemma3_text"]

  /// config.json's model_type ("llama" when absent).
  public var modelType = "llama"
  public var vocabSize: Int
  public var hiddenSize: Int
  public var intermediateSize: Int
  public var layers: Int
  public var heads: Int
  public var kvHeads: Int
  public var headDim: Int
  public var rmsNormEps: Double
  public var ropeTheta: Double
  public var ropeScaling: RopeScaling?
  public var maxPositionEmbeddings: Int
  public var tieWordEmbeddings: Bool
  /// Biases on q, k and v (Llama's attention_bias, always on for Qwen2).
  public var attentionBias: Bool
  /// A bias on o_proj: Llama's attention_bias covers it, Qwen2's does not.
  public var outputBias: Bool
  public var mlpBias: Bool
  public var bosTokenID: Int?
  public var eosTokenIDs: [Int]
  public var padTokenID: Int?

  /// Qwen3 and Gemma 3: an RMSNorm over each head of q and of k (weights `self_attn.q_norm` / `k_norm`,
  /// head_dim wide), after the projections and before RoPE.
  public var qkNorm: Bool { modelType == "qwen3" || isGemma3 }

  /// Gemma 3's text model (architectures.md): embeddings scaled by √hidden, (1 + w) RMSNorms, a norm after
  /// attention and around the MLP (four per block), GeGLU with the tanh GELU, scores scaled by
  /// query_pre_attn_scalar^-½, sliding-window layers with their own RoPE base.
  public var isGemma3: Bool { modelType == "gemma3_text" }
  /// Gemma 3: the attention scale's denominator squared (query_pre_attn_scalar).
  public var queryPreAttnScalar: Double?
  /// Gemma 3: keys a sliding layer sees (the query's own position and the W − 1 before it).
  public var slidingWindow: Int?
  /// Gemma 3: which blocks use sliding-window attention (the others attend to everything before).
  public var slidingLayers: [Bool] = []
  /// Gemma 3: the RoPE base of the sliding layers (rope_local_base_freq); `ropeTheta` and `ropeScaling`
  /// are the full layers'.
  public var localRopeTheta: Double?

  /// Block l's attention window (nil: all earlier positions).
  public func window(layer l: Int) -> Int? { l < slidingLayers.count && slidingLayers[l] ? slidingWindow : nil }

  public var qDim: Int { heads * headDim }
  public var kvDim: Int { kvHeads * headDim }

  public init(
    vocabSize: Int, hiddenSize: Int, intermediateSize: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int,
    rmsNormEps: Double = 1e-5, ropeTheta: Double = 10000, ropeScaling: RopeScaling? = nil,
    maxPositionEmbeddings: Int = 2048, tieWordEmbeddings: Bool = false, attentionBias: Bool = false,
    mlpBias: Bool = false, bosTokenID: Int? = nil, eosTokenIDs: [Int] = [], padTokenID: Int? = nil,
    outputBias: Bool? = nil
  ) {
    self.padTokenID = padTokenID
    self.outputBias = outputBias ?? attentionBias
    self.vocabSize = vocabSize
    self.hiddenSize = hiddenSize
    self.intermediateSize = intermediateSize
    self.layers = layers
    self.heads = heads
    self.kvHeads = kvHeads
    self.headDim = headDim
    self.rmsNormEps = rmsNormEps
    self.ropeTheta = ropeTheta
    self.ropeScaling = ropeScaling
    self.maxPositionEmbeddings = maxPositionEmbeddings
    self.tieWordEmbeddings = tieWordEmbeddings
    self.attentionBias = attentionBias
    self.mlpBias = mlpBias
    self.bosTokenID = bosTokenID
    self.eosTokenIDs = eosTokenIDs
  }

  /// Reads `config.json` (a file, or the one inside a checkpoint directory).
  public init(contentsOf path: String) throws(FormatError) {
    let file = FileSystem.isDirectory(path) ? (path.hasSuffix("/") ? path : path + "/") + "config.json" : path
    guard FileSystem.exists(file) else { throw .io(file: file, reason: "no config.json (a Llama checkpoint needs one)") }
    try self.init(json: try JSONFile.object(file), file: file)
  }

  public init(json o: JSONObject, file: String) throws(FormatError) {
    // Every key is read with its type checked: a key that is there with the wrong type is reported as
    // such (not as missing), and all problems are reported together.
    var problems: [FormatError] = []
    let fields = JSONFields(object: o, file: file)
    func int(_ key: String) -> Int {
      if o[key] == .null {
        problems.append(fields.wrongType(key, "a positive integer"))
        return 0
      }
      do throws(FormatError) {
        guard let v = try fields.int(key) else {
          problems.append(.missingMetadata(file: file, key: key))
          return 0
        }
        return v
      } catch {
        problems.append(error)
        return 0
      }
    }
    func optional<T>(_ read: () throws(FormatError) -> T?) -> T? {
      do throws(FormatError) { return try read() } catch {
        problems.append(error)
        return nil
      }
    }
    if let type = o["model_type"]?.stringValue {
      guard Self.supportedModelTypes.contains(type) else {
        throw .unsupportedModelType(file: file, modelType: type, supported: Self.supportedModelTypes)
      }
      modelType = type
    }
    if modelType == "qwen3", o["use_sliding_window"]?.boolValue == true {
      throw .io(file: file, reason: "`use_sliding_window` is true: Qwen3's sliding-window attention is not supported (released Qwen3 configs turn it off)")
    }
    if modelType == "gemma3_text" {
      for key in ["final_logit_softcapping", "attn_logit_softcapping"] where o[key] != nil && o[key] != .null {
        throw .io(file: file, reason: "`\(key)` is set: soft-capping is Gemma 2's, not supported here (Gemma 3 leaves it null)")
      }
      if o["use_bidirectional_attention"]?.boolValue == true {
        throw .io(file: file, reason: "`use_bidirectional_attention` is true: only causal attention is supported")
      }
      if let activation = o["hidden_activation"]?.stringValue ?? o["hidden_act"]?.stringValue, activation != "gelu_pytorch_tanh" {
        throw .io(file: file, reason: "`hidden_activation` is \(activation): Gemma 3's engine runs gelu_pytorch_tanh only")
      }
    }
    vocabSize = int("vocab_size")
    hiddenSize = int("hidden_size")
    intermediateSize = int("intermediate_size")
    layers = int("num_hidden_layers")
    heads = int("num_attention_heads")
    kvHeads = optional { () throws(FormatError) in try fields.int("num_key_value_heads") } ?? heads
    headDim = optional { () throws(FormatError) in try fields.int("head_dim") } ?? (heads > 0 ? hiddenSize / heads : 0)
    rmsNormEps = optional { () throws(FormatError) in try fields.double("rms_norm_eps") } ?? 1e-6
    ropeTheta = optional { () throws(FormatError) in try fields.double("rope_theta") }
      ?? o["rope_parameters"]?.objectValue?["rope_theta"]?.doubleValue ?? 10000
    maxPositionEmbeddings = optional { () throws(FormatError) in try fields.int("max_position_embeddings") } ?? 2048
    tieWordEmbeddings = optional { () throws(FormatError) in try fields.bool("tie_word_embeddings") } ?? (modelType == "gemma3_text")
    attentionBias = optional { () throws(FormatError) in try fields.bool("attention_bias") } ?? (o["model_type"]?.stringValue == "qwen2")
    mlpBias = optional { () throws(FormatError) in try fields.bool("mlp_bias") } ?? false
    outputBias = attentionBias && o["model_type"]?.stringValue != "qwen2"
    bosTokenID = o["bos_token_id"]?.intValue
    padTokenID = o["pad_token_id"]?.intValue
    if let list = o["eos_token_id"]?.arrayValue {
      eosTokenIDs = list.compactMap(\.intValue)
    } else {
      eosTokenIDs = o["eos_token_id"]?.intValue.map { [$0] } ?? []
    }
    if modelType == "gemma3_text" {
      // Hub configs: rope_theta (full layers, default 1e6), rope_local_base_freq (sliding, 1e4), rope_scaling
      // (full layers), sliding_window_pattern (every Nth block full, default 6); transformers 5 writes
      // rope_parameters per layer type and layer_types instead.
      let byType = o["rope_parameters"]?.objectValue
      let full = byType?["full_attention"]?.objectValue, local = byType?["sliding_attention"]?.objectValue
      ropeTheta = optional { () throws(FormatError) in try fields.double("rope_theta") } ?? full?["rope_theta"]?.doubleValue ?? 1_000_000
      localRopeTheta = optional { () throws(FormatError) in try fields.double("rope_local_base_freq") } ?? local?["rope_theta"]?.doubleValue ?? 10_000
      queryPreAttnScalar = optional { () throws(FormatError) in try fields.double("query_pre_attn_scalar") } ?? 256
      slidingWindow = optional { () throws(FormatError) in try fields.int("sliding_window") } ?? 4096
      if let types = o["layer_types"]?.arrayValue {
        slidingLayers = types.map { $0.stringValue == "sliding_attention" }
        if let bad = types.first(where: { !["sliding_attention", "full_attention"].contains($0.stringValue ?? "") }) {
          problems.append(.io(file: file, reason: "`layer_types` holds \(JSONFields.describe(bad)); expected \"sliding_attention\" or \"full_attention\""))
        }
        if types.count != layers { problems.append(.io(file: file, reason: "`layer_types` has \(types.count) entries for \(layers) layers")) }
      } else {
        let pattern = optional { () throws(FormatError) in try fields.int("sliding_window_pattern") } ?? 6
        if pattern < 1 { problems.append(.io(file: file, reason: "`sliding_window_pattern` is \(pattern); expected a positive integer")) }
        slidingLayers = (0..<layers).map { (($0 + 1) % max(1, pattern)) != 0 }
      }
      if o["rope_scaling"] == nil || o["rope_scaling"] == .null, let full, let type = full["rope_type"]?.stringValue, type != "default" {
        ropeScaling = RopeScaling(
          type: type, factor: full["factor"]?.doubleValue ?? 1, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192)
      }
    }
    if let s = o["rope_scaling"]?.objectValue {
      let scaling = JSONFields(object: s, file: file, prefix: "rope_scaling.")
      ropeScaling = RopeScaling(
        type: s["rope_type"]?.stringValue ?? s["type"]?.stringValue ?? "default",
        factor: optional { () throws(FormatError) in try scaling.double("factor") } ?? 1,
        lowFreqFactor: optional { () throws(FormatError) in try scaling.double("low_freq_factor") } ?? 1,
        highFreqFactor: optional { () throws(FormatError) in try scaling.double("high_freq_factor") } ?? 4,
        originalMaxPositionEmbeddings: optional { () throws(FormatError) in try scaling.int("original_max_position_embeddings") } ?? 8192)
    } else if !isGemma3 {
      ropeScaling = nil
    }
    if !problems.isEmpty { throw FormatError.many(problems).flattened }
    try checkValues(file: file) { $0 }
  }

  /// Refuses hyperparameters no model has, before anything is sized by them: sizes and counts must be
  /// positive, head_dim even (RoPE rotates pairs), heads a multiple of the KV heads, and the epsilon,
  /// RoPE base and scaling factor finite and positive. `key` names a field as the source spells it.
  public func checkValues(file: String, key: (String) -> String) throws(FormatError) {
    var problems: [FormatError] = []
    func require(_ ok: Bool, _ field: String, _ value: String, _ expected: String) {
      if !ok { problems.append(.io(file: file, reason: "`\(key(field))` is \(value); expected \(expected)")) }
    }
    for (field, value) in [
      ("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
      ("num_hidden_layers", layers), ("num_attention_heads", heads), ("num_key_value_heads", kvHeads),
      ("head_dim", headDim), ("max_position_embeddings", maxPositionEmbeddings),
    ] {
      require(value >= 1, field, String(value), "a positive integer")
    }
    require(headDim % 2 == 0, "head_dim", String(headDim), "an even number (RoPE rotates pairs of dimensions)")
    require(kvHeads < 1 || heads % kvHeads == 0, "num_attention_heads", String(heads), "a multiple of num_key_value_heads (\(kvHeads))")
    require(rmsNormEps.isFinite && rmsNormEps > 0, "rms_norm_eps", "\(rmsNormEps)", "a finite number > 0")
    require(ropeTheta.isFinite && ropeTheta > 0, "rope_theta", "\(ropeTheta)", "a finite number > 0")
    if let local = localRopeTheta { require(local.isFinite && local > 0, "rope_local_base_freq", "\(local)", "a finite number > 0") }
    if let scalar = queryPreAttnScalar { require(scalar.isFinite && scalar > 0, "query_pre_attn_scalar", "\(scalar)", "a finite number > 0") }
    if let window = slidingWindow { require(window >= 1, "sliding_window", String(window), "a positive integer") }
    if let s = ropeScaling {
      require(s.factor.isFinite && s.factor > 0, "rope_scaling.factor", "\(s.factor)", "a finite number > 0")
      require(s.lowFreqFactor.isFinite && s.lowFreqFactor > 0 && s.highFreqFactor.isFinite && s.highFreqFactor > s.lowFreqFactor,
        "rope_scaling.high_freq_factor", "\(s.highFreqFactor)", "finite and above low_freq_factor (\(s.lowFreqFactor))")
      require(s.originalMaxPositionEmbeddings >= 1, "rope_scaling.original_max_position_embeddings", String(s.originalMaxPositionEmbeddings), "a positive integer")
    }
    for (field, id) in [("bos_token_id", bosTokenID), ("pad_token_id", padTokenID)] + eosTokenIDs.map({ ("eos_token_id", Optional($0)) }) {
      if let id { require(id >= 0 && id < max(vocabSize, 1), field, String(id), "a token id below vocab_size (\(vocabSize))") }
    }
    if !problems.isEmpty { throw FormatError.many(problems).flattened }
  }

  /// The tensors a Llama-family checkpoint with this config holds and their torch shapes, in the order
  /// the engine lays its parameters out (block by block; biases after their group's weights).
  public var expectedTensors: [(name: String, shape: [Int])] {
    var list: [(String, [Int])] = [("model.embed_tokens.weight", [vocabSize, hiddenSize])]
    for l in 0..<layers {
      let p = "model.layers.\(l)."
      /// A group of projections (out, in): their weights, then their biases when the config has them.
      func projections(_ group: [(String, Int, Int)], bias: Bool) {
        for (name, out, inp) in group { list.append((p + name + ".weight", [out, inp])) }
        if bias { for (name, out, _) in group { list.append((p + name + ".bias", [out])) } }
      }
      let (hidden, q, kv, mlp) = (hiddenSize, qDim, kvDim, intermediateSize)
      list.append((p + "input_layernorm.weight", [hidden]))
      projections([("self_attn.q_proj", q, hidden), ("self_attn.k_proj", kv, hidden), ("self_attn.v_proj", kv, hidden)], bias: attentionBias)
      projections([("self_attn.o_proj", hidden, q)], bias: outputBias)
      if qkNorm {
        list.append((p + "self_attn.q_norm.weight", [headDim]))
        list.append((p + "self_attn.k_norm.weight", [headDim]))
      }
      list.append((p + "post_attention_layernorm.weight", [hidden]))
      if isGemma3 {
        list.append((p + "pre_feedforward_layernorm.weight", [hidden]))
        list.append((p + "post_feedforward_layernorm.weight", [hidden]))
      }
      projections([("mlp.gate_proj", mlp, hidden), ("mlp.up_proj", mlp, hidden), ("mlp.down_proj", hidden, mlp)], bias: mlpBias)
    }
    list.append(("model.norm.weight", [hiddenSize]))
    if !tieWordEmbeddings { list.append(("lm_head.weight", [vocabSize, hiddenSize])) }
    return list
  }

  /// Checks the config against the tensors that exist, before anything is allocated from it: the layer
  /// count (no block missing, none beyond it) and every weight's shape. A config that lies about either
  /// is refused with every disagreement listed (the first few per kind), naming the file and tensor.
  public func checkTensors(_ infos: [TensorInfo], file: String, configFile: String) throws(FormatError) {
    var problems: [FormatError] = []
    let shapes = Dictionary(infos.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
    var stored = -1
    for info in infos where info.name.hasPrefix("model.layers.") {
      if let l = Int(info.name.dropFirst("model.layers.".count).prefix { $0 != "." }) { stored = max(stored, l) }
    }
    if stored + 1 != layers {
      problems.append(.io(file: configFile, reason: "num_hidden_layers is \(layers), but \(file) holds \(stored + 1) blocks (model.layers.0-\(stored))"))
    }
    guard layers <= stored + 1 else { throw FormatError.many(problems).flattened }
    var missing: [String] = [], wrong: [String] = []
    for (name, shape) in expectedTensors {
      guard let found = shapes[name] else {
        missing.append(name)
        continue
      }
      if found != shape { wrong.append("`\(name)` is \(found), the config implies \(shape)") }
    }
    if !missing.isEmpty {
      problems.append(.io(file: file, reason: "\(missing.count) tensors the config needs are missing: \(missing.prefix(3).joined(separator: ", "))\(missing.count > 3 ? ", …" : "")"))
    }
    if !wrong.isEmpty {
      problems.append(.io(file: configFile, reason: "the config contradicts \(wrong.count) tensor shapes: \(wrong.prefix(3).joined(separator: "; "))\(wrong.count > 3 ? "; …" : "")"))
    }
    if !problems.isEmpty { throw FormatError.many(problems).flattened }
  }
}

extension LlamaConfig {
  /// The config of an open checkpoint: a GGUF carries it in its metadata, anything else has config.json
  /// in the checkpoint's directory.
  /// The config is checked against the tensors the checkpoint holds (`checkTensors`).
  public static func of(_ reader: any CheckpointReader) throws(FormatError) -> LlamaConfig {
    if let gguf = reader as? GGUFCheckpoint { return gguf.config }
    let directory = FileSystem.checkpointDirectory(of: reader.path)
    let config = try LlamaConfig(contentsOf: directory)
    try config.checkTensors(reader.infos, file: reader.path, configFile: directory + "/config.json")
    return config
  }
}

/// What a checkpoint says about its model, for checks that report rather than fail on a missing or
/// foreign config (verify).
public enum CheckpointConfig: Sendable {
  /// No config.json beside the weights.
  case absent
  /// config.json is not valid JSON (or not an object); `reason` names the file.
  case invalid(file: String, reason: String)
  /// Valid JSON, but not a config of a supported family.
  case foreign(file: String, reason: String)
  /// The config, and the float dtype its torch_dtype (or dtype) names, if any.
  case llama(LlamaConfig, torchDtype: String?, dtype: DType?)

  public static func of(_ reader: any CheckpointReader) -> CheckpointConfig {
    if let gguf = reader as? GGUFCheckpoint { return .llama(gguf.config, torchDtype: nil, dtype: nil) }
    let directory = FileSystem.checkpointDirectory(of: reader.path)
    let path = directory + "/config.json"
    guard FileSystem.exists(path) else { return .absent }
    let root: JSONObject
    do { root = try JSONFile.object(path) } catch { return .invalid(file: path, reason: "\(error)") }
    do {
      let config = try LlamaConfig(json: root, file: path)
      for key in ["torch_dtype", "dtype"] {
        if let value = root[key], value != .null, value.stringValue == nil {
          return .foreign(file: path, reason: "`\(key)` is \(JSONFields.describe(value)); expected a dtype name such as \"bfloat16\"")
        }
      }
      let torchDtype = root["torch_dtype"]?.stringValue ?? root["dtype"]?.stringValue
      return .llama(config, torchDtype: torchDtype, dtype: torchDtype.flatMap(DType.init(torchName:)))
    } catch {
      return .foreign(file: path, reason: "\(error)")
    }
  }
}
