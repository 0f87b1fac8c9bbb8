// Forward and backward of a Llama model over a (B, T) batch, layer by layer; backward walks the forward
// in reverse. Gradients flow to every layer input (no base weight gets a gradient buffer unless a
// DenseLinear was given one); adapter layers accumulate their own gradients inside their backward.
//
// Per block (HF LlamaDecoderLayer):
//   h   = x + o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),  n1 = rmsnorm(x)
//   out = h + down_proj(silu(gate_proj(n2)) ⊙ up_proj(n2)),                 n2 = rmsnorm(h)
// Qwen3 normalises each head of q_proj(n1) and k_proj(n1) (RMSNorm over head_dim) before RoPE. Gemma 3
// does too, and normalises each sublayer's output before its residual add; its norms scale by (1 + w),
// its MLP is GeGLU, and its sliding layers attend within a window with their own RoPE base.

import Formats

public final class LlamaRunner {
  public let model: LlamaModel
  public let plan: ActivationPlan
  let acts: Activations
  private var tokens: [Int32] = []
  private var targets: [Int32] = []
  private var forwardHadTargets = false
  /// When set, backward copies dL/d(layer input) here: layerInputGradients[l] (N, C); entry `layers` is
  /// dL/d(final norm input).
  public var captureLayerInputGradients = false
  public private(set) var layerInputGradients: [[Float]] = []

  /// `training: false` plans activations for scoring only (two layer slots; `backward` refused).
  /// Layers 0..<`recomputedLayers` keep only their input and are recomputed in backward (training).
  public init(model: LlamaModel, B: Int, T: Int, headChunk: Int = 128, training: Bool = true, recomputedLayers: Int = 0) {
    self.model = model
    plan = ActivationPlan(config: model.config, B: B, T: T, headChunk: min(headChunk, B * T), training: training, recomputedLayers: recomputedLayers)
    acts = Activations(config: model.config, plan: plan)
  }

  public var activationBytes: Int { acts.count * 4 }
  var N: Int { plan.B * plan.T }

  /// Runs the model on `tokens` (B·T ids). With `targets` (B·T ids, −1 = ignored) it computes the mean
  /// cross-entropy and per-token NLL; with `prepareBackward` it also computes the head's gradient so
  /// that `backward()` can follow. `onLogits(n, row)` sees each logit row as it is computed.
  /// `gradientNormalizer`: the gradient is that of (sum of NLL) / gradientNormalizer instead of the mean
  /// (for gradient accumulation: pass the target count of the whole accumulated step).
  @discardableResult
  public func forward(
    tokens: [Int32], targets: [Int32]? = nil, prepareBackward: Bool = false, gradientNormalizer: Int? = nil,
    onLogits: ((Int, UnsafeBufferPointer<Float>) -> Void)? = nil
  ) throws(SurgeryError) -> LMHeadResult {
    try Denormals.flushed { () throws(SurgeryError) in
      try forwardPass(tokens: tokens, targets: targets, prepareBackward: prepareBackward, gradientNormalizer: gradientNormalizer, onLogits: onLogits)
    }
  }

  private func forwardPass(
    tokens: [Int32], targets: [Int32]?, prepareBackward: Bool, gradientNormalizer: Int?,
    onLogits: ((Int, UnsafeBufferPointer<Float>) -> Void)?
  ) throws(SurgeryError) -> LMHeadResult {
    let c = model.config
    guard tokens.count == N, targets.map({ $0.count == N }) ?? true else {
      throw .batchShape(planned: "\(plan.B)×\(plan.T) tokens", got: "\(tokens.count) tokens")
    }
    for t in tokens where t < 0 || Int(t) >= c.vocabSize { throw .invalidToken(id: Int(t), vocabSize: c.vocabSize) }
    for t in targets ?? [] where Int(t) >= c.vocabSize { throw .invalidToken(id: Int(t), vocabSize: c.vocabSize) }
    self.tokens = tokens
    self.targets = targets ?? []
    guard !prepareBackward || plan.training else {
      throw .backwardUnavailable("this runner was planned for scoring only, not training")
    }
    forwardHadTargets = targets != nil && prepareBackward

    try tokens.withUnsafeBufferPointer { (t) throws(SurgeryError) in try model.embed(tokens: t.baseAddress!, N: N, into: acts.layers[0].xIn) }
    for l in 0..<c.layers {
      try model.prepare(block: l)
      runBlock(l, output: l + 1 < c.layers ? acts.layers[l + 1].xIn : acts.xFinal)
    }
    return try head(targets: targets, onLogits: onLogits, gradientNormalizer: gradientNormalizer)
  }

  /// The final norm and the LM head over the final-norm input in `acts.xFinal`.
  private func head(
    targets: [Int32]?, onLogits: ((Int, UnsafeBufferPointer<Float>) -> Void)?, gradientNormalizer: Int?
  ) throws(SurgeryError) -> LMHeadResult {
    let c = model.config
    let (C, eps) = (c.hiddenSize, Float(c.rmsNormEps))
    RMSNorm.forward(
      out: acts.xFinalNorm, rstd: acts.rstdF, inp: acts.xFinal, weight: model.weight("model.norm.weight"), eps: eps, N: N, C: C,
      offset: model.normOffset)
    if forwardHadTargets { acts.dx.update(repeating: 0, count: N * C) }
    let targetPointer = self.targets
    switch model.headWeight {
    case .resident(let weight):
      return targetPointer.withUnsafeBufferPointer { t in
        LMHead.run(
          x: acts.xFinalNorm, weight: weight, targets: targets == nil ? nil : t.baseAddress, N: N, C: C, V: c.vocabSize,
          chunk: plan.headChunk, scratch: acts.headScratch, tokenNLL: acts.tokenNLL,
          dx: forwardHadTargets ? acts.dx : nil, logitsOut: onLogits, gradientNormalizer: gradientNormalizer)
      }
    case .stored(let table):
      guard onLogits == nil else { throw .unsupported("logit rows of a streamed model (its head is computed a vocabulary chunk at a time)") }
      do {
        return try targetPointer.withUnsafeBufferPointer { (t) throws(FormatError) in
          try LMHead.runStored(
            x: acts.xFinalNorm, table: table, targets: targets == nil ? nil : t.baseAddress, N: N, C: C, V: c.vocabSize,
            scratch: acts.headScratch, scratchCount: plan.headChunk * c.vocabSize, tokenNLL: acts.tokenNLL,
            dx: forwardHadTargets ? acts.dx : nil, gradientNormalizer: gradientNormalizer)
        }
      } catch { throw .format(error) }
    }
  }

  /// Scores hidden states that have passed every block (N × hidden floats, e.g. from a layer-major
  /// sweep): final norm and LM head against `targets` (−1 = ignored), no backward.
  public func forwardHead(input: UnsafePointer<Float>, targets: [Int32]) throws(SurgeryError) -> LMHeadResult {
    guard targets.count == N else { throw .batchShape(planned: "\(plan.B)×\(plan.T) tokens", got: "\(targets.count) targets") }
    for t in targets where Int(t) >= model.config.vocabSize { throw .invalidToken(id: Int(t), vocabSize: model.config.vocabSize) }
    self.targets = targets
    forwardHadTargets = false
    acts.xFinal.update(from: input, count: N * model.config.hiddenSize)
    return try Denormals.flushed { () throws(SurgeryError) in try head(targets: targets, onLogits: nil, gradientNormalizer: nil) }
  }

  /// Runs decoder block l alone on `input` (B·T tokens, hidden size each) into `output` (which may be the
  /// same memory: the input is copied in first). For layer-by-layer calibration.
  public func forwardBlock(_ l: Int, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>) throws(SurgeryError) {
    try model.prepare(block: l)
    acts.layers[l].xIn.update(from: input, count: N * model.config.hiddenSize)
    Denormals.flushed { runBlock(l, output: output) }
  }

  /// Block l on the input already in its slot, writing the block's output to `next`.
  private func runBlock(_ l: Int, output next: UnsafeMutablePointer<Float>) {
    let c = model.config
    let (C, eps, offset) = (c.hiddenSize, Float(c.rmsNormEps), model.normOffset)
    let a = acts.layers[l]
    let lin = model.linears[l]
    let norms = model.norms(layer: l)
    // attention half
    RMSNorm.forward(out: acts.xn, rstd: a.rstd1, inp: a.xIn, weight: model.weight(norms.attentionInput), eps: eps, N: N, C: C, offset: offset)
    if c.qkNorm {
      lin[0].forward(out: a.qPre, inp: acts.xn, N: N)
      lin[1].forward(out: a.kPre, inp: acts.xn, N: N)
      RMSNorm.forward(out: a.q, rstd: a.rstdQ, inp: a.qPre, weight: model.weight(norms.q), eps: eps, N: N * c.heads, C: c.headDim, offset: offset)
      RMSNorm.forward(out: a.k, rstd: a.rstdK, inp: a.kPre, weight: model.weight(norms.k), eps: eps, N: N * c.kvHeads, C: c.headDim, offset: offset)
    } else {
      lin[0].forward(out: a.q, inp: acts.xn, N: N)
      lin[1].forward(out: a.k, inp: acts.xn, N: N)
    }
    lin[2].forward(out: a.v, inp: acts.xn, N: N)
    let rope = model.rope(layer: l)
    rope.forward(a.q, B: plan.B, T: plan.T, heads: c.heads)
    rope.forward(a.k, B: plan.B, T: plan.T, heads: c.kvHeads)
    Attention.forward(
      out: a.attn, lse: a.lse, q: a.q, k: a.k, v: a.v, B: plan.B, T: plan.T, H: c.heads, KV: c.kvHeads, hd: c.headDim,
      window: c.window(layer: l), scale: model.attentionScale)
    if let after = norms.attentionOutput {
      lin[3].forward(out: a.attnOut, inp: a.attn, N: N)
      RMSNorm.forward(out: acts.tmp, rstd: a.rstdA, inp: a.attnOut, weight: model.weight(after), eps: eps, N: N, C: C, offset: offset)
    } else {
      lin[3].forward(out: acts.tmp, inp: a.attn, N: N)
    }
    a.xMid.update(from: a.xIn, count: N * C)
    accumulate(a.xMid, acts.tmp, count: N * C)
    // MLP half
    RMSNorm.forward(out: acts.xn, rstd: a.rstd2, inp: a.xMid, weight: model.weight(norms.mlpInput), eps: eps, N: N, C: C, offset: offset)
    lin[4].forward(out: a.gate, inp: acts.xn, N: N)
    lin[5].forward(out: a.up, inp: acts.xn, N: N)
    gatedActivation(a)
    if let after = norms.mlpOutput {
      lin[6].forward(out: a.mlpOut, inp: acts.act, N: N)
      RMSNorm.forward(out: acts.tmp, rstd: a.rstdM, inp: a.mlpOut, weight: model.weight(after), eps: eps, N: N, C: C, offset: offset)
    } else {
      lin[6].forward(out: acts.tmp, inp: acts.act, N: N)
    }
    next.update(from: a.xMid, count: N * C)
    accumulate(next, acts.tmp, count: N * C)
  }

  /// acts.act = the MLP's gated activation of layer slot `a`: SwiGLU, or GeGLU (tanh GELU) for Gemma 3.
  private func gatedActivation(_ a: Activations.Layer) {
    let count = N * model.config.intermediateSize
    if model.config.isGemma3 { GeGLU.forward(out: acts.act, gate: a.gate, up: a.up, count: count) } else {
      SwiGLU.forward(out: acts.act, gate: a.gate, up: a.up, count: count)
    }
  }

  /// Per-token NLL of the last forward with targets (0 where ignored).
  public var tokenNLL: [Float] { Array(UnsafeBufferPointer(start: acts.tokenNLL, count: N)) }

  /// Backpropagates the loss of the last `forward(…, prepareBackward: true)` to every layer input,
  /// running each linear layer's backward (adapters accumulate their gradients there).
  public func backward() throws(SurgeryError) {
    guard forwardHadTargets else { throw .backwardUnavailable("it needs a forward pass with targets and prepareBackward first") }
    try Denormals.flushed { () throws(SurgeryError) in try backwardPass() }
  }

  private func backwardPass() throws(SurgeryError) {
    let c = model.config
    let (C, I, eps) = (c.hiddenSize, c.intermediateSize, Float(c.rmsNormEps))
    // dx holds dL/d(final norm output); turn it into dL/d(final norm input).
    acts.dxn.update(from: acts.dx, count: N * C)
    acts.dx.update(repeating: 0, count: N * C)
    RMSNorm.backward(
      dinp: acts.dx, dweight: nil, dout: acts.dxn, inp: acts.xFinal, weight: model.weight("model.norm.weight"), rstd: acts.rstdF, N: N, C: C,
      offset: model.normOffset)
    if captureLayerInputGradients { layerInputGradients = Array(repeating: [], count: c.layers + 1) }
    capture(c.layers)
    for l in stride(from: c.layers - 1, through: 0, by: -1) {
      try model.prepare(block: l)
      // Checkpointed: rebuild the layer's saved activations from its input (its output, written again,
      // is the same values into a buffer whose backward is done).
      if l < plan.recomputedLayers { runBlock(l, output: l + 1 < c.layers ? acts.layers[l + 1].xIn : acts.xFinal) }
      let a = acts.layers[l]
      let lin = model.linears[l]
      let norms = model.norms(layer: l)
      let offset = model.normOffset
      // MLP half: dx = dL/d(block output), and it passes the residual unchanged. With a norm after the MLP
      // (Gemma 3), dL/d(down output) goes through it first, into dxn.
      gatedActivation(a)
      var dDown = UnsafePointer(acts.dx)
      if let after = norms.mlpOutput {
        acts.dxn.update(repeating: 0, count: N * C)
        RMSNorm.backward(dinp: acts.dxn, dweight: nil, dout: acts.dx, inp: a.mlpOut, weight: model.weight(after), rstd: a.rstdM, N: N, C: C, offset: offset)
        dDown = UnsafePointer(acts.dxn)
      }
      acts.dact.update(repeating: 0, count: N * I)
      lin[6].backward(dinp: acts.dact, dout: dDown, inp: acts.act, N: N)
      acts.dgate.update(repeating: 0, count: N * I)
      acts.dup.update(repeating: 0, count: N * I)
      if c.isGemma3 {
        GeGLU.backward(dgate: acts.dgate, dup: acts.dup, dout: acts.dact, gate: a.gate, up: a.up, count: N * I)
      } else {
        SwiGLU.backward(dgate: acts.dgate, dup: acts.dup, dout: acts.dact, gate: a.gate, up: a.up, count: N * I)
      }
      let norm2 = model.weight(norms.mlpInput)
      RMSNorm.forward(out: acts.xn, rstd: a.rstd2, inp: a.xMid, weight: norm2, eps: eps, N: N, C: C, offset: offset)
      acts.dxn.update(repeating: 0, count: N * C)
      lin[4].backward(dinp: acts.dxn, dout: acts.dgate, inp: acts.xn, N: N)
      lin[5].backward(dinp: acts.dxn, dout: acts.dup, inp: acts.xn, N: N)
      RMSNorm.backward(dinp: acts.dx, dweight: nil, dout: acts.dxn, inp: a.xMid, weight: norm2, rstd: a.rstd2, N: N, C: C, offset: offset)
      // attention half: dx = dL/d(h) = dL/d(o_proj output, or its norm's output) + residual.
      var dO = UnsafePointer(acts.dx)
      if let after = norms.attentionOutput {
        acts.dxn.update(repeating: 0, count: N * C)
        RMSNorm.backward(dinp: acts.dxn, dweight: nil, dout: acts.dx, inp: a.attnOut, weight: model.weight(after), rstd: a.rstdA, N: N, C: C, offset: offset)
        dO = UnsafePointer(acts.dxn)
      }
      acts.dattn.update(repeating: 0, count: N * c.qDim)
      lin[3].backward(dinp: acts.dattn, dout: dO, inp: a.attn, N: N)
      acts.dq.update(repeating: 0, count: N * c.qDim)
      acts.dk.update(repeating: 0, count: N * c.kvDim)
      acts.dv.update(repeating: 0, count: N * c.kvDim)
      Attention.backward(
        dq: acts.dq, dk: acts.dk, dv: acts.dv, dout: acts.dattn, out: a.attn, lse: a.lse, q: a.q, k: a.k, v: a.v,
        B: plan.B, T: plan.T, H: c.heads, KV: c.kvHeads, hd: c.headDim, window: c.window(layer: l), scale: model.attentionScale)
      let rope = model.rope(layer: l)
      rope.backward(acts.dq, B: plan.B, T: plan.T, heads: c.heads)
      rope.backward(acts.dk, B: plan.B, T: plan.T, heads: c.kvHeads)
      let norm1 = model.weight(norms.attentionInput)
      RMSNorm.forward(out: acts.xn, rstd: a.rstd1, inp: a.xIn, weight: norm1, eps: eps, N: N, C: C, offset: offset)
      acts.dxn.update(repeating: 0, count: N * C)
      if c.qkNorm {
        // Through the per-head norms into buffers already consumed: dattn (q's width) and, once v_proj's
        // backward has read it, dv (k's width).
        lin[2].backward(dinp: acts.dxn, dout: acts.dv, inp: acts.xn, N: N)
        let (dqPre, dkPre) = (acts.dattn, acts.dv)
        dqPre.update(repeating: 0, count: N * c.qDim)
        dkPre.update(repeating: 0, count: N * c.kvDim)
        RMSNorm.backward(
          dinp: dqPre, dweight: nil, dout: acts.dq, inp: a.qPre, weight: model.weight(norms.q), rstd: a.rstdQ, N: N * c.heads, C: c.headDim,
          offset: offset)
        RMSNorm.backward(
          dinp: dkPre, dweight: nil, dout: acts.dk, inp: a.kPre, weight: model.weight(norms.k), rstd: a.rstdK, N: N * c.kvHeads, C: c.headDim,
          offset: offset)
        lin[0].backward(dinp: acts.dxn, dout: dqPre, inp: acts.xn, N: N)
        lin[1].backward(dinp: acts.dxn, dout: dkPre, inp: acts.xn, N: N)
      } else {
        lin[0].backward(dinp: acts.dxn, dout: acts.dq, inp: acts.xn, N: N)
        lin[1].backward(dinp: acts.dxn, dout: acts.dk, inp: acts.xn, N: N)
        lin[2].backward(dinp: acts.dxn, dout: acts.dv, inp: acts.xn, N: N)
      }
      RMSNorm.backward(dinp: acts.dx, dweight: nil, dout: acts.dxn, inp: a.xIn, weight: norm1, rstd: a.rstd1, N: N, C: C, offset: offset)
      capture(l)
    }
  }

  private func capture(_ slot: Int) {
    guard captureLayerInputGradients else { return }
    layerInputGradients[slot] = Array(UnsafeBufferPointer(start: acts.dx, count: N * model.config.hiddenSize))
  }

  /// The saved input of layer l (slot `layers` = final norm input), for tests.
  public func layerInput(_ l: Int) -> [Float] {
    let p = l < model.config.layers ? acts.layers[l].xIn : acts.xFinal
    return Array(UnsafeBufferPointer(start: p, count: N * model.config.hiddenSize))
  }
}
