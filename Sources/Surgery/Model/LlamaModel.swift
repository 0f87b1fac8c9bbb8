// A Llama-family model in memory: config, its weights, and the seven projections of each block as
// replaceable LinearLayers (adapter methods swap them). Weights are held one of two ways, chosen by the
// memory plan:
//   resident   every weight widened to f32 in one arena (fastest; 4 bytes per parameter)
//   streamed   the final norm in f32, one block's f32 workspace that the engine fills block by block
//              (BlockStream), and the embedding and LM head left in their stored dtype (StoredMatrix)

import Foundation
import Formats

public final class LlamaModel: @unchecked Sendable {
  public let config: LlamaConfig
  /// Resident: every weight. Streamed: the final norm plus one block's slots, shared by all blocks.
  public let params: ParamArena
  /// linears[layer][p] for p in LlamaTensors.projections order (q, k, v, o, gate, up, down).
  public var linears: [[LinearLayer]]
  public let rope: RoPE
  /// Gemma 3's sliding-window layers rotate with their own base (rope_local_base_freq, unscaled).
  let localRope: RoPE?
  /// Set when the model is streamed.
  public let stream: BlockStream?
  let embeddingTable: StoredMatrix?
  let headTable: StoredMatrix?

  /// Builds a model around an arena filled by the caller (tests, or `load`).
  public convenience init(config: LlamaConfig, params: ParamArena, maxPositions: Int) {
    self.init(config: config, params: params, maxPositions: maxPositions, stream: nil, embedding: nil, head: nil)
  }

  init(config: LlamaConfig, params: ParamArena, maxPositions: Int, stream: BlockStream?, embedding: StoredMatrix?, head: StoredMatrix?) {
    self.config = config
    self.params = params
    self.stream = stream
    embeddingTable = embedding
    headTable = head
    rope = RoPE(headDim: config.headDim, maxPositions: maxPositions, theta: config.ropeTheta, scaling: config.ropeScaling)
    localRope = config.localRopeTheta.map { RoPE(headDim: config.headDim, maxPositions: maxPositions, theta: $0) }
    linears = (0..<config.layers).map { l in
      LlamaTensors.projections.map { p in
        let name = "model.layers.\(l).\(p)"
        let w = params.pointer(name + ".weight")!
        let shape = params.layout.entry(name + ".weight")!.shape
        return DenseLinear(weight: w, bias: params.pointer(name + ".bias").map { UnsafePointer($0) },
          inFeatures: shape[1], outFeatures: shape[0])
      }
    }
  }

  /// How the weights are held.
  public enum Residency: String, Sendable {
    case resident, streamed
  }

  public var residency: Residency { stream == nil ? .resident : .streamed }

  /// Loads config.json and the weights of a checkpoint (any format Formats reads). All missing or
  /// misshapen tensors are reported together. `maxPositions` sizes the RoPE tables.
  public static func load(_ path: String, maxPositions: Int? = nil, residency: Residency = .resident) throws(SurgeryError) -> LlamaModel {
    try SurgeryError.wrapping(path) {
      let reader = try Checkpoint.open(path)
      let config = try LlamaConfig.of(reader)
      let names = LlamaTensors.names(config)
      try check(reader, names: names, path: path)
      let positions = maxPositions ?? config.maxPositionEmbeddings
      if residency == .streamed { return try streamed(reader, config: config, names: names, maxPositions: positions) }
      let arena = ParamArena(ParamLayout(names))
      for e in arena.layout.entries {
        let tensor = try reader.tensor(e.name)
        try tensor.withUnsafeBytes { (b) throws(FormatError) in
          try Float32Conversion.widen(tensor.dtype, from: b.baseAddress!, to: arena.base + e.offset, count: e.count)
        }
        reader.release(e.name)
      }
      return LlamaModel(config: config, params: arena, maxPositions: positions)
    }
  }

  static func check(_ reader: any CheckpointReader, names: [(String, [Int])], path: String) throws(SurgeryError) {
    let available = Dictionary(reader.infos.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    var problems: [String] = []
    for (name, shape) in names {
      guard let info = available[name] else {
        problems.append("missing tensor `\(name)`")
        continue
      }
      if info.shape != shape { problems.append("tensor `\(name)` has shape \(info.shape), config.json implies \(shape)") }
    }
    if !problems.isEmpty { throw SurgeryError.checkpoint(path: path, problems: problems) }
  }

  /// The streamed layout: final norm first, then one slot per tensor of block 0 that every block aliases.
  static func streamed(_ reader: any CheckpointReader, config: LlamaConfig, names: [(String, [Int])], maxPositions: Int) throws(FormatError) -> LlamaModel {
    var entries: [ParamLayout.Entry] = []
    let norm = config.hiddenSize
    entries.append(.init(name: "model.norm.weight", shape: [norm], offset: 0, count: norm))
    var slots: [(suffix: String, offset: Int, count: Int)] = []
    var slotOf: [String: Int] = [:]
    var cursor = norm
    for (name, shape) in names where name.hasPrefix("model.layers.0.") {
      let suffix = String(name.dropFirst("model.layers.0.".count))
      let count = shape.reduce(1, *)
      slotOf[suffix] = slots.count
      slots.append((suffix, cursor, count))
      cursor += count
    }
    for (name, shape) in names where name.hasPrefix("model.layers.") {
      let suffix = name.split(separator: ".", maxSplits: 3).last.map(String.init) ?? ""
      guard let s = slotOf[suffix] else { continue }
      entries.append(.init(name: name, shape: shape, offset: slots[s].offset, count: slots[s].count))
    }
    let arena = ParamArena(ParamLayout(entries: entries))
    let normTensor = try reader.tensor("model.norm.weight")
    try normTensor.withUnsafeBytes { (b) throws(FormatError) in
      try Float32Conversion.widen(normTensor.dtype, from: b.baseAddress!, to: arena.base, count: norm)
    }
    let stream = BlockStream(reader: reader, slots: slots, workspace: arena.base)
    let embedding = try StoredMatrix(reader, name: "model.embed_tokens.weight")
    let head = config.tieWordEmbeddings ? embedding : try StoredMatrix(reader, name: "lm_head.weight")
    return LlamaModel(config: config, params: arena, maxPositions: maxPositions, stream: stream, embedding: embedding, head: head)
  }

  /// Makes block l's weights readable through `weight`, `params` and `linears[l]` (streamed: widens it
  /// into the workspace unless it is there; resident: nothing to do).
  public func prepare(block l: Int) throws(SurgeryError) {
    guard let stream else { return }
    do { try stream.load(l) } catch { throw .format(error) }
  }

  public func weight(_ name: String) -> UnsafeMutablePointer<Float> { params.pointer(name)! }
  /// The shape of any weight of the model (from config.json), whichever way it is held.
  public func shape(_ name: String) -> [Int]? { params.layout.entry(name)?.shape ?? (name == "model.embed_tokens.weight" || name == "lm_head.weight" ? [config.vocabSize, config.hiddenSize] : nil) }

  /// The rotation of block l's q and k.
  func rope(layer l: Int) -> RoPE { config.window(layer: l) != nil ? (localRope ?? rope) : rope }

  /// The norms of block l by the place they take: Llama's post_attention_layernorm is the MLP's input norm;
  /// Gemma 3 has that role as pre_feedforward_layernorm and normalises each sublayer's output too.
  func norms(layer l: Int) -> BlockNorms {
    let p = "model.layers.\(l)."
    return BlockNorms(
      attentionInput: p + "input_layernorm.weight",
      mlpInput: p + (config.isGemma3 ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight"),
      attentionOutput: config.isGemma3 ? p + "post_attention_layernorm.weight" : nil,
      mlpOutput: config.isGemma3 ? p + "post_feedforward_layernorm.weight" : nil,
      q: p + "self_attn.q_norm.weight", k: p + "self_attn.k_norm.weight")
  }

  /// The attention's score scale when it is not 1/√head_dim (Gemma 3: query_pre_attn_scalar^-½).
  var attentionScale: Float? { config.queryPreAttnScalar.map { Float(pow($0, -0.5)) } }

  /// What every RMSNorm adds to its weight: 1 for Gemma's (1 + w) norms, else 0.
  var normOffset: Float { config.isGemma3 ? 1 : 0 }

  /// out (N, C) = the embedding rows of `tokens` (Gemma 3: times √hidden, the constant rounded to f32).
  func embed(tokens: UnsafePointer<Int32>, N: Int, into out: UnsafeMutablePointer<Float>) throws(SurgeryError) {
    if let embeddingTable {
      do { try embeddingTable.gather(tokens: tokens, N: N, into: out) } catch { throw .format(error) }
    } else {
      Embedding.forward(out: out, tokens: tokens, table: weight("model.embed_tokens.weight"), N: N, C: config.hiddenSize)
    }
    if config.isGemma3 {
      let scale = Float(Double(config.hiddenSize).squareRoot())
      for i in 0..<(N * config.hiddenSize) { out[i] *= scale }
    }
  }

  /// The output projection as the LM head reads it: lm_head, or the embedding when tied.
  var headWeight: LMHead.Weight {
    if let headTable { return .stored(headTable) }
    return .resident(weight(config.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight"))
  }
}

/// Weight names of a block's norms (see LlamaModel.norms(layer:)).
struct BlockNorms {
  let attentionInput: String
  let mlpInput: String
  let attentionOutput: String?
  let mlpOutput: String?
  let q: String
  let k: String
}
