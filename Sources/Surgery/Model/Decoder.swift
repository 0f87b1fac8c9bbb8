// Autoregressive decoding of one sequence with a KV cache: `feed` runs new tokens through every block at
// the next positions (the prompt in chunks, then one token per step) and returns the logits of the last
// one. Each block is the runner's block (HF LlamaDecoderLayer) with attention over the cache:
//   h   = x + o_proj(attn(rope(q_proj(n1)), cache ∪ rope(k_proj(n1)), cache ∪ v_proj(n1))),  n1 = rmsnorm(x)
//   out = h + down_proj(silu(gate_proj(n2)) ⊙ up_proj(n2)),                               n2 = rmsnorm(h)
// (Qwen3 and Gemma 3: each head of q and k normalised before RoPE; Gemma 3's sublayer outputs normalised,
// its sliding layers windowed, as in the runner.)
// A streamed model reads every block once per `feed` call.

import Formats

public final class Decoder {
  public let model: LlamaModel
  public let cache: KVCache
  /// Tokens per forward at most (a longer prompt is fed in chunks of this many).
  public let chunk: Int
  private let buffers: UnsafeMutablePointer<Float>
  private let offsets: Offsets

  /// Floats of the step buffers for `chunk` tokens and a cache of `capacity` positions.
  struct Offsets {
    let x, xn, q, k, v, attn, tmp, gate, up, act, scores, rstd, logits, total: Int
    init(_ c: LlamaConfig, chunk T: Int, capacity: Int) {
      var cursor = 0
      func take(_ n: Int) -> Int {
        defer { cursor += n }
        return cursor
      }
      x = take(T * c.hiddenSize)
      xn = take(T * c.hiddenSize)
      q = take(T * c.qDim)
      k = take(T * c.kvDim)
      v = take(T * c.kvDim)
      attn = take(T * c.qDim)
      tmp = take(T * c.hiddenSize)
      gate = take(T * c.intermediateSize)
      up = take(T * c.intermediateSize)
      act = take(T * c.intermediateSize)
      scores = take(T * capacity)
      rstd = take(T * max(1, c.qkNorm ? c.heads : 1))
      logits = take(c.vocabSize)
      total = cursor
    }
  }

  /// Bytes a decoder allocates besides the model: cache, step buffers, and the head's chunk scratch.
  public static func bytes(_ c: LlamaConfig, chunk: Int, capacity: Int) -> Int {
    KVCache.bytes(layers: c.layers, capacity: capacity, kvDim: c.kvDim) + Offsets(c, chunk: chunk, capacity: capacity).total * 4
  }

  /// `capacity`: positions the sequence may reach (prompt + generated); at most the model's RoPE table.
  public init(model: LlamaModel, capacity: Int, chunk: Int = 128) throws(SurgeryError) {
    guard capacity >= 1, capacity <= model.rope.maxPositions else {
      throw .invalidRequest("a sequence of \(capacity) positions does not fit: the model was loaded for 1 to \(model.rope.maxPositions) positions")
    }
    self.model = model
    self.chunk = max(1, min(chunk, capacity))
    cache = KVCache(layers: model.config.layers, capacity: capacity, kvDim: model.config.kvDim)
    offsets = Offsets(model.config, chunk: self.chunk, capacity: capacity)
    buffers = .allocate(capacity: offsets.total)
  }

  deinit { buffers.deallocate() }

  /// Positions fed so far.
  public var length: Int { cache.length }

  /// Starts a new sequence.
  public func reset() { cache.reset() }

  /// Runs `tokens` at the next positions and returns the logits (vocabulary) after the last of them.
  public func feed(_ tokens: [Int32]) throws(SurgeryError) -> [Float] {
    let c = model.config
    guard !tokens.isEmpty else { throw .invalidRequest("there are no tokens to feed (an empty prompt?)") }
    guard cache.length + tokens.count <= cache.capacity else {
      throw .invalidRequest("the sequence would reach \(cache.length + tokens.count) positions; this decoder was planned for \(cache.capacity)")
    }
    for t in tokens where t < 0 || Int(t) >= c.vocabSize { throw .invalidToken(id: Int(t), vocabSize: c.vocabSize) }
    return try Denormals.flushed { () throws(SurgeryError) in
      var start = 0
      while start < tokens.count {
        let piece = Array(tokens[start..<min(tokens.count, start + chunk)])
        try forward(piece)
        start += piece.count
      }
      return try logitsOfLast(count: tokens.count - (tokens.count - 1) / chunk * chunk)
    }
  }

  /// Every block over `tokens` (at most `chunk`) at positions length..<length+T; leaves the final hidden
  /// states in x and advances the cache.
  private func forward(_ tokens: [Int32]) throws(SurgeryError) {
    let c = model.config
    let (T, C, I, eps) = (tokens.count, c.hiddenSize, c.intermediateSize, Float(c.rmsNormEps))
    let start = cache.length
    let o = offsets, b = buffers
    let (x, xn, q, k, v, attn, tmp) = (b + o.x, b + o.xn, b + o.q, b + o.k, b + o.v, b + o.attn, b + o.tmp)
    let (gate, up, act, rstd) = (b + o.gate, b + o.up, b + o.act, b + o.rstd)
    try tokens.withUnsafeBufferPointer { (t) throws(SurgeryError) in try model.embed(tokens: t.baseAddress!, N: T, into: x) }
    let offset = model.normOffset
    for l in 0..<c.layers {
      try model.prepare(block: l)
      let lin = model.linears[l]
      let norms = model.norms(layer: l)
      let (keys, values) = (cache.keys(layer: l), cache.values(layer: l))
      // attention half
      RMSNorm.forward(out: xn, rstd: rstd, inp: x, weight: model.weight(norms.attentionInput), eps: eps, N: T, C: C, offset: offset)
      lin[0].forward(out: q, inp: xn, N: T)
      lin[1].forward(out: k, inp: xn, N: T)
      lin[2].forward(out: v, inp: xn, N: T)
      if c.qkNorm {
        // In place: each row is read before it is written.
        RMSNorm.forward(out: q, rstd: rstd, inp: q, weight: model.weight(norms.q), eps: eps, N: T * c.heads, C: c.headDim, offset: offset)
        RMSNorm.forward(out: k, rstd: rstd, inp: k, weight: model.weight(norms.k), eps: eps, N: T * c.kvHeads, C: c.headDim, offset: offset)
      }
      let rope = model.rope(layer: l)
      rope.forward(q, start: start, T: T, heads: c.heads)
      rope.forward(k, start: start, T: T, heads: c.kvHeads)
      (keys + start * c.kvDim).update(from: k, count: T * c.kvDim)
      (values + start * c.kvDim).update(from: v, count: T * c.kvDim)
      CachedAttention.forward(
        out: attn, q: q, keys: keys, values: values, start: start, T: T, H: c.heads, KV: c.kvHeads, hd: c.headDim,
        scores: b + o.scores, window: c.window(layer: l), scale: model.attentionScale)
      lin[3].forward(out: tmp, inp: attn, N: T)
      if let after = norms.attentionOutput {
        RMSNorm.forward(out: tmp, rstd: rstd, inp: tmp, weight: model.weight(after), eps: eps, N: T, C: C, offset: offset)
      }
      accumulate(x, tmp, count: T * C)
      // MLP half
      RMSNorm.forward(out: xn, rstd: rstd, inp: x, weight: model.weight(norms.mlpInput), eps: eps, N: T, C: C, offset: offset)
      lin[4].forward(out: gate, inp: xn, N: T)
      lin[5].forward(out: up, inp: xn, N: T)
      if c.isGemma3 { GeGLU.forward(out: act, gate: gate, up: up, count: T * I) } else { SwiGLU.forward(out: act, gate: gate, up: up, count: T * I) }
      lin[6].forward(out: tmp, inp: act, N: T)
      if let after = norms.mlpOutput {
        RMSNorm.forward(out: tmp, rstd: rstd, inp: tmp, weight: model.weight(after), eps: eps, N: T, C: C, offset: offset)
      }
      accumulate(x, tmp, count: T * C)
    }
    cache.advance(by: T)
  }

  /// Final norm and head over the last of the `count` rows in x.
  private func logitsOfLast(count: Int) throws(SurgeryError) -> [Float] {
    let c = model.config
    let C = c.hiddenSize
    let o = offsets, b = buffers
    RMSNorm.forward(
      out: b + o.xn, rstd: b + o.rstd, inp: b + o.x + (count - 1) * C, weight: model.weight("model.norm.weight"),
      eps: Float(c.rmsNormEps), N: 1, C: C, offset: model.normOffset)
    do { try LMHead.logits(x: b + o.xn, weight: model.headWeight, C: C, V: c.vocabSize, into: b + o.logits) } catch {
      throw .format(error)
    }
    return Array(UnsafeBufferPointer(start: b + o.logits, count: c.vocabSize))
  }
}
