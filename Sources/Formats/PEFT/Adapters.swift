// PEFT's adapter directory: adapter_config.json (a LoraConfig) + adapter_model.safetensors, whose tensors
// are named "base_model.model.<module>.lora_A.weight" (r, in) and ".lora_B.weight" (out, r). How each
// adapter method's own tensors map onto those names is Surgery's AdapterSet.peftNames.

public struct PEFTAdapterConfig: Equatable, Sendable {
  public var rank: Int
  public var alpha: Double
  public var targetModules: [String]
  public var dropout: Double
  /// Scale alpha / sqrt(r) instead of alpha / r.
  public var useRSLoRA: Bool
  public var baseModel: String
  public var peftType = "LORA"
  public var taskType = "CAUSAL_LM"
  /// Per-module ranks and alphas that differ from `rank` and `alpha` (PEFT's rank_pattern / alpha_pattern,
  /// keyed by module name; PEFT scales a module by its alpha / its rank).
  public var rankPattern: [String: Int] = [:]
  public var alphaPattern: [String: Double] = [:]
  /// PEFT's layers_to_transform: the only block indices the adapter may touch (nil: all).
  public var layersToTransform: [Int]?

  public init(rank: Int, alpha: Double, targetModules: [String], dropout: Double = 0, useRSLoRA: Bool, baseModel: String) {
    self.rank = rank
    self.alpha = alpha
    self.targetModules = targetModules
    self.dropout = dropout
    self.useRSLoRA = useRSLoRA
    self.baseModel = baseModel
  }

  /// The fields PEFT's LoraConfig writes that matter for loading a plain LoRA (the others take PEFT's
  /// defaults when absent).
  public var json: JSONValue {
    .object(JSONObject([
      ("alpha_pattern", .object(JSONObject(alphaPattern.sorted { $0.key < $1.key }.map { ($0.key, .number(Self.number($0.value))) }))),
      ("auto_mapping", .null),
      ("base_model_name_or_path", .string(baseModel)),
      ("bias", .string("none")),
      ("fan_in_fan_out", .bool(false)),
      ("inference_mode", .bool(true)),
      ("init_lora_weights", .bool(true)),
      ("layers_pattern", .null),
      ("layers_to_transform", layersToTransform.map { list in .array(list.map { .number(String($0)) }) } ?? .null),
      ("lora_alpha", .number(Self.number(alpha))),
      ("lora_dropout", .number(Self.number(dropout))),
      ("modules_to_save", .null),
      ("peft_type", .string(peftType)),
      ("r", .number(String(rank))),
      ("rank_pattern", .object(JSONObject(rankPattern.sorted { $0.key < $1.key }.map { ($0.key, .number(String($0.value))) }))),
      ("revision", .null),
      ("target_modules", .array(targetModules.map { .string($0) })),
      ("task_type", .string(taskType)),
      ("use_dora", .bool(false)),
      ("use_rslora", .bool(useRSLoRA)),
    ]))
  }

  static func number(_ v: Double) -> String {
    v == v.rounded() && abs(v) < 1e15 ? String(Int(v)) : String(v)
  }

  public init(json root: JSONValue, file: String) throws(FormatError) {
    guard let o = root.objectValue else { throw .io(file: file, reason: "not a JSON object") }
    guard let r = o["r"]?.intValue, r > 0 else { throw .io(file: file, reason: "missing or invalid \"r\" (expected a positive integer)") }
    guard let alpha = o["lora_alpha"]?.doubleValue, alpha.isFinite, alpha > 0 else {
      throw .io(file: file, reason: "missing or invalid \"lora_alpha\" (expected a finite number > 0)")
    }
    let targets: [String]
    if let list = o["target_modules"]?.arrayValue {
      targets = list.compactMap(\.stringValue)
    } else if let one = o["target_modules"]?.stringValue {
      targets = [one]
    } else {
      throw .io(file: file, reason: "missing \"target_modules\"")
    }
    if o["fan_in_fan_out"]?.boolValue == true { throw .io(file: file, reason: "fan_in_fan_out adapters are not supported") }
    if o["use_dora"]?.boolValue == true { throw .io(file: file, reason: "DoRA adapters are not supported") }
    self.init(
      rank: r, alpha: alpha, targetModules: targets, dropout: o["lora_dropout"]?.doubleValue ?? 0,
      useRSLoRA: o["use_rslora"]?.boolValue ?? false, baseModel: o["base_model_name_or_path"]?.stringValue ?? "")
    peftType = o["peft_type"]?.stringValue ?? "LORA"
    taskType = o["task_type"]?.stringValue ?? "CAUSAL_LM"
    guard peftType == "LORA" else { throw .io(file: file, reason: "peft_type is \(peftType); Espalier reads LORA adapters") }
    if let value = o["use_rslora"], value != .null, value.boolValue == nil {
      throw .io(file: file, reason: "\"use_rslora\" is not true or false")
    }
    if let layers = o["layers_to_transform"], layers != .null {
      guard let list = layers.arrayValue.map({ $0.compactMap(\.intValue) }) ?? layers.intValue.map({ [$0] }),
        list.count == (layers.arrayValue?.count ?? 1)
      else { throw .io(file: file, reason: "\"layers_to_transform\" is not a layer index or a list of them") }
      layersToTransform = list
    }
    for (key, value) in (o["rank_pattern"]?.objectValue).map({ p in p.keys.map { ($0, p[$0]!) } }) ?? [] {
      guard let rank = value.intValue, rank > 0 else { throw .io(file: file, reason: "rank_pattern[\"\(key)\"] is not a positive integer") }
      rankPattern[key] = rank
    }
    for (key, value) in (o["alpha_pattern"]?.objectValue).map({ p in p.keys.map { ($0, p[$0]!) } }) ?? [] {
      guard let a = value.doubleValue, a.isFinite, a > 0 else { throw .io(file: file, reason: "alpha_pattern[\"\(key)\"] is not a finite number > 0") }
      alphaPattern[key] = a
    }
  }

  /// The rank PEFT gives a module (its rank_pattern entry, else r) and its scale (alpha / r, or
  /// alpha / sqrt(r) with use_rslora).
  public func rank(of module: String) -> Int { rankPattern[module] ?? rank }
  public func scale(of module: String) -> Double {
    let (a, r) = (alphaPattern[module] ?? alpha, Double(rank(of: module)))
    return useRSLoRA ? a / r.squareRoot() : a / r
  }

  /// Whether PEFT would adapt `module` (e.g. "model.layers.3.self_attn.q_proj"): its last name is one of
  /// target_modules (or they are "all-linear"), and its block is in layers_to_transform when that is set.
  public func covers(_ module: String) -> Bool {
    let last = module.split(separator: ".").last.map(String.init) ?? module
    guard targetModules.contains("all-linear") || targetModules.contains(last) || targetModules.contains(module) else { return false }
    guard let layers = layersToTransform else { return true }
    let parts = module.split(separator: ".")
    guard let i = parts.firstIndex(of: "layers"), i + 1 < parts.count, let l = Int(parts[i + 1]) else { return false }
    return layers.contains(l)
  }
}

public enum PEFTAdapter {
  public static let configName = "adapter_config.json"
  public static let weightsName = "adapter_model.safetensors"
  public static let prefix = "base_model.model."

  public static func readConfig(_ directory: String) throws(FormatError) -> PEFTAdapterConfig {
    let path = directory + "/" + configName
    return try PEFTAdapterConfig(json: try JSONFile.read(path), file: path)
  }

  public static func openWeights(_ directory: String) throws(FormatError) -> SafetensorsFile {
    try SafetensorsFile(path: directory + "/" + weightsName)
  }

  /// Writes the adapter directory complete or not at all: the weights, the config and `extra` files.
  public static func write(_ tensors: [Tensor], config: PEFTAdapterConfig, extra: [SideFile], to directory: String) throws(FormatError) {
    try write(tensors.map(TensorSource.init), config: config, extra: extra, to: directory)
  }

  /// The same, each tensor loaded only when it is written.
  public static func write(_ tensors: [TensorSource], config: PEFTAdapterConfig, extra: [SideFile], to directory: String) throws(FormatError) {
    try AtomicDirectory.build(directory) { (temporary) throws(FormatError) in
      try SafetensorsWriter.write(tensors, to: temporary + "/" + weightsName)
      try SideFile(name: configName, content: .text(JSONWriter.pretty(config.json) + "\n")).write(into: temporary)
      for file in extra { try file.write(into: temporary) }
    }
  }
}

/// The part of espalier.json (written beside a PEFT adapter by TrainingStore.writeAdapter) that merge relies on.
public struct EspalierAdapterRecord: Sendable {
  public static let fileName = "espalier.json"
  public var method: String
  public var scale: Double
  public var baseFingerprint: String?
  /// The fingerprint of the base's other tensors (embedding, norms, head, untouched projections), when recorded.
  public var othersFingerprint: String?

  /// nil when the directory has no espalier.json (a plain PEFT adapter).
  public static func read(_ directory: String) throws(FormatError) -> EspalierAdapterRecord? {
    let path = directory + "/" + fileName
    guard FileSystem.exists(path) else { return nil }
    let o = try JSONFile.object(path)
    guard let method = o["method"]?.stringValue, let scale = o["scale"]?.doubleValue else {
      throw .io(file: path, reason: "missing \"method\" or \"scale\"")
    }
    guard scale.isFinite, Float(scale).isFinite, scale > 0 else { throw .io(file: path, reason: "\"scale\" is \(scale); expected a finite number > 0") }
    var record = EspalierAdapterRecord(method: method, scale: scale, baseFingerprint: o["base_fingerprint"]?.stringValue)
    record.othersFingerprint = o["base_fingerprint_others"]?.stringValue
    return record
  }
}
