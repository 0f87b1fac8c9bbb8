// A Llama-family model in memory: config, every weight widened to f32 in one arena, and the seven
// projections of each block as replaceable LinearLayers (adapter methods swap them).

import Formats

public final class LlamaModel: @unchecked Sendable {
  public let config: LlamaConfig
  public let params: ParamArena
  /// linears[layer][p] for p in LlamaTensors.projections order (q, k, v, o, gate, up, down).
  public var linears: [[LinearLayer]]
  public let rope: RoPE

  /// Builds a model around an arena filled by the caller (tests, or `load`).
  public init(config: LlamaConfig, params: ParamArena, maxPositions: Int) {
    self.config = config
    self.params = params
    rope = RoPE(headDim: config.headDim, maxPositions: maxPositions, theta: config.ropeTheta, scaling: config.ropeScaling)
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

  /// Loads config.json and every weight of a checkpoint (any format Formats reads), widening to f32.
  /// All missing or misshapen tensors are reported together. `maxPositions` sizes the RoPE tables.
  public static func load(_ path: String, maxPositions: Int? = nil) throws(SurgeryError) -> LlamaModel {
    try SurgeryError.wrapping(path) {
      let reader = try Checkpoint.open(path)
      let config = try LlamaConfig.of(reader)
      let layout = ParamLayout(LlamaTensors.names(config))
      let arena = ParamArena(layout)
      let available = Dictionary(reader.infos.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
      var problems: [String] = []
      for e in layout.entries {
        guard let info = available[e.name] else {
          problems.append("missing tensor `\(e.name)`")
          continue
        }
        guard info.shape == e.shape else {
          problems.append("tensor `\(e.name)` has shape \(info.shape), config.json implies \(e.shape)")
          continue
        }
      }
      if !problems.isEmpty { throw SurgeryError.checkpoint(path: path, problems: problems) }
      for e in layout.entries {
        let tensor = try reader.tensor(e.name)
        try tensor.withUnsafeBytes { (b) throws(FormatError) in
          try Float32Conversion.widen(tensor.dtype, from: b.baseAddress!, to: arena.base + e.offset, count: e.count)
        }
        reader.release(e.name)
      }
      return LlamaModel(config: config, params: arena, maxPositions: maxPositions ?? config.maxPositionEmbeddings)
    }
  }

  public func weight(_ name: String) -> UnsafeMutablePointer<Float> { params.pointer(name)! }
  public var embedding: UnsafeMutablePointer<Float> { weight("model.embed_tokens.weight") }
  /// The output projection: lm_head, or the embedding when tied.
  public var head: UnsafeMutablePointer<Float> {
    config.tieWordEmbeddings ? embedding : weight("lm_head.weight")
  }
}
