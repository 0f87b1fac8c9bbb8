// config.json of the Llama family (LlamaForCausalLM and look-alikes: SmolLM2, Qwen2-style biases), read
// strictly: every missing required key is reported at once, each naming the file.

public struct RopeScaling: Equatable, Sendable {
  /// "llama3" (frequency-dependent), "linear", or another HF rope type (rejected by the engine).
  public var type: String
  public var factor: Double
  public var lowFreqFactor: Double
  public var highFreqFactor: Double
  public var originalMaxPositionEmbeddings: Int
}

public struct LlamaConfig: Equatable, Sendable {
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
    var missing: [FormatError] = []
    func int(_ key: String) -> Int {
      guard let v = o[key]?.intValue else {
        missing.append(.missingMetadata(file: file, key: key))
        return 0
      }
      return v
    }
    if let type = o["model_type"]?.stringValue, !["llama", "mistral", "qwen2"].contains(type) {
      throw .unsupportedArchitecture(file: file, architecture: type)
    }
    vocabSize = int("vocab_size")
    hiddenSize = int("hidden_size")
    intermediateSize = int("intermediate_size")
    layers = int("num_hidden_layers")
    heads = int("num_attention_heads")
    kvHeads = o["num_key_value_heads"]?.intValue ?? heads
    headDim = o["head_dim"]?.intValue ?? (heads > 0 ? hiddenSize / heads : 0)
    rmsNormEps = o["rms_norm_eps"]?.doubleValue ?? 1e-6
    ropeTheta = o["rope_theta"]?.doubleValue ?? o["rope_parameters"]?.objectValue?["rope_theta"]?.doubleValue ?? 10000
    maxPositionEmbeddings = o["max_position_embeddings"]?.intValue ?? 2048
    tieWordEmbeddings = o["tie_word_embeddings"]?.boolValue ?? false
    attentionBias = o["attention_bias"]?.boolValue ?? (o["model_type"]?.stringValue == "qwen2")
    mlpBias = o["mlp_bias"]?.boolValue ?? false
    outputBias = attentionBias && o["model_type"]?.stringValue != "qwen2"
    bosTokenID = o["bos_token_id"]?.intValue
    padTokenID = o["pad_token_id"]?.intValue
    if let list = o["eos_token_id"]?.arrayValue {
      eosTokenIDs = list.compactMap(\.intValue)
    } else {
      eosTokenIDs = o["eos_token_id"]?.intValue.map { [$0] } ?? []
    }
    if let s = o["rope_scaling"]?.objectValue {
      ropeScaling = RopeScaling(
        type: s["rope_type"]?.stringValue ?? s["type"]?.stringValue ?? "default",
        factor: s["factor"]?.doubleValue ?? 1,
        lowFreqFactor: s["low_freq_factor"]?.doubleValue ?? 1,
        highFreqFactor: s["high_freq_factor"]?.doubleValue ?? 4,
        originalMaxPositionEmbeddings: s["original_max_position_embeddings"]?.intValue ?? 8192)
    } else {
      ropeScaling = nil
    }
    if !missing.isEmpty { throw FormatError.many(missing).flattened }
    if heads > 0 && kvHeads > 0 && heads % kvHeads != 0 {
      throw .io(file: file, reason: "num_attention_heads \(heads) is not a multiple of num_key_value_heads \(kvHeads)")
    }
  }
}

extension LlamaConfig {
  /// The config of an open checkpoint: a GGUF carries it in its metadata, anything else has config.json
  /// in the checkpoint's directory.
  public static func of(_ reader: any CheckpointReader) throws(FormatError) -> LlamaConfig {
    if let gguf = reader as? GGUFCheckpoint { return gguf.config }
    return try LlamaConfig(contentsOf: FileSystem.checkpointDirectory(of: reader.path))
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
      let torchDtype = root["torch_dtype"]?.stringValue ?? root["dtype"]?.stringValue
      return .llama(config, torchDtype: torchDtype, dtype: torchDtype.flatMap(DType.init(torchName:)))
    } catch {
      return .foreign(file: path, reason: "\(error)")
    }
  }
}
