// All parameters of a model in one contiguous f32 buffer with named views (llm.c's
// malloc_and_point_parameters). The layout computes every offset once; gradient and optimizer arenas
// can reuse it, so an optimizer is one flat loop.

import Formats

public struct ParamLayout: Sendable {
  public struct Entry: Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    public var offset: Int
    public var count: Int
  }
  public private(set) var entries: [Entry] = []
  private var index: [String: Int] = [:]
  public private(set) var totalCount = 0

  public init(_ tensors: [(String, [Int])]) {
    for (name, shape) in tensors {
      let count = shape.reduce(1, *)
      index[name] = entries.count
      entries.append(Entry(name: name, shape: shape, offset: totalCount, count: count))
      totalCount += count
    }
  }

  /// A layout with given offsets, which may alias: a streamed model maps the tensors of every block onto
  /// the same block-sized slots. The total is the end of the furthest entry.
  public init(entries: [Entry]) {
    for e in entries {
      index[e.name] = self.entries.count
      self.entries.append(e)
      totalCount = max(totalCount, e.offset + e.count)
    }
  }

  public func entry(_ name: String) -> Entry? { index[name].map { entries[$0] } }
}

/// A zero-initialised f32 buffer laid out by a ParamLayout.
public final class ParamArena: @unchecked Sendable {
  public let layout: ParamLayout
  public let base: UnsafeMutablePointer<Float>

  public init(_ layout: ParamLayout) {
    self.layout = layout
    base = .allocate(capacity: max(1, layout.totalCount))
    base.initialize(repeating: 0, count: max(1, layout.totalCount))
  }
  deinit { base.deallocate() }

  public func pointer(_ name: String) -> UnsafeMutablePointer<Float>? { layout.entry(name).map { base + $0.offset } }
  public func zero() { base.update(repeating: 0, count: layout.totalCount) }
  public var bytes: Int { layout.totalCount * 4 }
}

/// The HF tensor names and shapes of a Llama model.
public enum LlamaTensors {
  public static func names(_ c: LlamaConfig) -> [(String, [Int])] {
    var list: [(String, [Int])] = [("model.embed_tokens.weight", [c.vocabSize, c.hiddenSize])]
    for l in 0..<c.layers {
      let p = "model.layers.\(l)."
      /// A group of projections (out, in): their weights, then their biases when the config has them.
      func projections(_ group: [(String, Int, Int)], bias: Bool) {
        for (name, out, inp) in group { list.append((p + name + ".weight", [out, inp])) }
        if bias { for (name, out, _) in group { list.append((p + name + ".bias", [out])) } }
      }
      let (hidden, q, kv, mlp) = (c.hiddenSize, c.qDim, c.kvDim, c.intermediateSize)
      list.append((p + "input_layernorm.weight", [hidden]))
      projections([("self_attn.q_proj", q, hidden), ("self_attn.k_proj", kv, hidden), ("self_attn.v_proj", kv, hidden)], bias: c.attentionBias)
      projections([("self_attn.o_proj", hidden, q)], bias: c.outputBias)
      list.append((p + "post_attention_layernorm.weight", [hidden]))
      projections([("mlp.gate_proj", mlp, hidden), ("mlp.up_proj", mlp, hidden), ("mlp.down_proj", hidden, mlp)], bias: c.mlpBias)
    }
    list.append(("model.norm.weight", [c.hiddenSize]))
    if !c.tieWordEmbeddings { list.append(("lm_head.weight", [c.vocabSize, c.hiddenSize])) }
    return list
  }

  /// The seven projections of a block, in the order the engine runs them.
  public static let projections = [
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
  ]
}
