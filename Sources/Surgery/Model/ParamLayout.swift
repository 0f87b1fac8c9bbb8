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
  /// The checkpoint's tensors in parameter order (LlamaConfig.expectedTensors).
  public static func names(_ c: LlamaConfig) -> [(String, [Int])] { c.expectedTensors.map { ($0.name, $0.shape) } }

  /// The seven projections of a block, in the order the engine runs them.
  public static let projections = [
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
  ]
}
