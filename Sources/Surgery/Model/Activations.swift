// The one activation arena: every buffer forward saves for backward, plus shared scratch, sized by a pure
// function of (config, B, T) and allocated once. Saved per layer: the layer input, q/k/v after RoPE, the
// attention output, the per-row log-sum-exp, the residual after attention, gate and up, and the two
// RMSNorm rstd vectors (Qwen3 and Gemma 3 also keep q and k before their per-head norms and those norms'
// rstd; Gemma 3 the o_proj and down_proj outputs before their norms, and those norms' rstd).
// The normalised inputs and the SwiGLU product are recomputed in backward (cheap, elementwise), and no
// (heads × T × T) tensor is kept.

import Formats

public struct ActivationPlan: Sendable, Equatable {
  public let B: Int
  public let T: Int
  public let headChunk: Int
  /// Float counts per saved buffer of one layer, and of the shared pieces.
  public let perLayer: Int
  public let shared: Int
  let hiddenSize: Int

  /// Whether every layer keeps its activations for backward; without, two layer slots alternate.
  public let training: Bool
  /// Activation checkpointing (training only): layers 0..<recomputedLayers keep only their input, and
  /// backward recomputes each of them into one shared slot just before its backward (one more forward of
  /// those layers per step); the other layers keep everything. The plan recomputes as few as fit.
  public let recomputedLayers: Int
  public var checkpointed: Bool { recomputedLayers > 0 }

  public init(config c: LlamaConfig, B: Int, T: Int, headChunk: Int = 128, training: Bool = true, recomputedLayers: Int = 0) {
    self.B = B
    self.T = T
    self.headChunk = headChunk
    self.training = training
    self.recomputedLayers = training ? min(max(0, recomputedLayers), c.layers) : 0
    hiddenSize = c.hiddenSize
    let N = B * T
    perLayer = N * c.hiddenSize * 2 + N * 2 + N * (c.qDim * 2 + c.kvDim * 2) + B * c.heads * T
      + N * c.intermediateSize * 2 + Self.headNormFloats(c, N: N) + Self.outputNormFloats(c, N: N)
    // final-norm input and output + rstd; scratch: xn, tmp, act, the LM head chunk, tokens' NLL; and for
    // training the gradient scratch dx, dxn, dq, dk, dv, dattn, dgate, dup, dact.
    shared = N * c.hiddenSize * 2 + N + N * c.hiddenSize * 2 + N * c.intermediateSize + headChunk * c.vocabSize + N
      + (training ? Self.gradientScratch(c, N: N) : 0)
  }

  /// Per layer with per-head q/k norms (Qwen3): q and k before the norms and one rstd per head row.
  static func headNormFloats(_ c: LlamaConfig, N: Int) -> Int {
    c.qkNorm ? N * (c.qDim + c.kvDim) + N * (c.heads + c.kvHeads) : 0
  }

  /// Per layer with normalised sublayer outputs (Gemma 3): o_proj's and down_proj's outputs and rstd.
  static func outputNormFloats(_ c: LlamaConfig, N: Int) -> Int { c.isGemma3 ? 2 * N * c.hiddenSize + 2 * N : 0 }

  /// Floats of the logits scratch for N tokens: `headChunk` (at most 128) tokens' rows of the vocabulary.
  static func headScratch(_ c: LlamaConfig, N: Int, headChunk: Int = 128) -> Int { min(headChunk, N) * c.vocabSize }

  static func gradientScratch(_ c: LlamaConfig, N: Int) -> Int {
    N * c.hiddenSize * 2 + N * (c.qDim * 2 + c.kvDim * 2) + N * c.intermediateSize * 3
  }

  public func floats(layers: Int) -> Int {
    if checkpointed { return B * T * hiddenSize * recomputedLayers + perLayer * (1 + layers - recomputedLayers) + shared }
    return perLayer * (training ? layers : min(2, layers)) + shared
  }
  public func bytes(layers: Int) -> Int { floats(layers: layers) * 4 }
}

/// Views into one allocation, laid out by an ActivationPlan.
final class Activations {
  struct Layer {
    var xIn, rstd1, q, k, v, attn, lse, xMid, rstd2, gate, up: UnsafeMutablePointer<Float>
    /// Qwen3's q/k before their per-head norms and the norms' rstd (empty views otherwise).
    var qPre, kPre, rstdQ, rstdK: UnsafeMutablePointer<Float>
    /// Gemma 3's o_proj and down_proj outputs before their norms, and those norms' rstd (empty otherwise).
    var attnOut, mlpOut, rstdA, rstdM: UnsafeMutablePointer<Float>
  }
  let plan: ActivationPlan
  let base: UnsafeMutablePointer<Float>
  let count: Int
  var layers: [Layer] = []
  // final norm
  var xFinal, rstdF, xFinalNorm: UnsafeMutablePointer<Float>
  // scratch
  var xn, tmp, act, dx, dxn, dq, dk, dv, dattn, dgate, dup, dact, headScratch, tokenNLL: UnsafeMutablePointer<Float>

  init(config c: LlamaConfig, plan: ActivationPlan) {
    self.plan = plan
    count = plan.floats(layers: c.layers)
    base = .allocate(capacity: count)
    base.initialize(repeating: 0, count: count)
    var cursor = base
    func take(_ n: Int) -> UnsafeMutablePointer<Float> {
      defer { cursor += n }
      return cursor
    }
    let N = plan.B * plan.T
    let (C, I) = (c.hiddenSize, c.intermediateSize)
    let headNorm = c.qkNorm ? 1 : 0, outputNorm = c.isGemma3 ? 1 : 0
    func slot() -> Layer {
      Layer(
        xIn: take(N * C), rstd1: take(N), q: take(N * c.qDim), k: take(N * c.kvDim), v: take(N * c.kvDim),
        attn: take(N * c.qDim), lse: take(plan.B * c.heads * plan.T), xMid: take(N * C), rstd2: take(N),
        gate: take(N * I), up: take(N * I), qPre: take(headNorm * N * c.qDim), kPre: take(headNorm * N * c.kvDim),
        rstdQ: take(headNorm * N * c.heads), rstdK: take(headNorm * N * c.kvHeads),
        attnOut: take(outputNorm * N * C), mlpOut: take(outputNorm * N * C), rstdA: take(outputNorm * N), rstdM: take(outputNorm * N))
    }
    // Checkpointed: one working slot that every layer's saved input is paired with.
    var working: Layer?
    if plan.checkpointed {
      working = slot()
    }
    for l in 0..<c.layers {
      if var slot = working, l < plan.recomputedLayers {
        slot.xIn = take(N * C)
        layers.append(slot)
        continue
      }
      // Scoring keeps no activations for backward: layers reuse two slots, so layer l's output (the
      // next slot's input) never overwrites its own input.
      if !plan.training && l >= 2 {
        layers.append(layers[l % 2])
        continue
      }
      layers.append(slot())
    }
    xFinal = take(N * C)
    rstdF = take(N)
    xFinalNorm = take(N * C)
    xn = take(N * C)
    tmp = take(N * C)
    act = take(N * I)
    // Scoring never reaches backward (the runner refuses it), so it gets no gradient scratch: the
    // pointers then view an empty slice and are never dereferenced.
    let g = plan.training ? 1 : 0
    dx = take(g * N * C)
    dxn = take(g * N * C)
    dq = take(g * N * c.qDim)
    dk = take(g * N * c.kvDim)
    dv = take(g * N * c.kvDim)
    dattn = take(g * N * c.qDim)
    dgate = take(g * N * I)
    dup = take(g * N * I)
    dact = take(g * N * I)
    headScratch = take(plan.headChunk * c.vocabSize)
    tokenNLL = take(N)
    assert(cursor - base == count, "activation plan and layout disagree")
  }

  deinit { base.deallocate() }
}
