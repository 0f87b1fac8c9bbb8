// The memory plan of an engine tool: a pure function of (config, stored dtype, flags, budget) that lists
// what is resident, what streams, the workspaces, activations and optimizer state, picks the fastest
// arrangement that fits the budget and says so before any work starts. Fastest first: every weight
// resident in f32; then the streamed model (one block's f32 workspace, embedding and head left in their
// stored dtype); then smaller batches, and calibration states in a temporary file. When even the
// smallest arrangement does not fit, the tool refuses with the plan in its message.
//
// The byte counts are the engine's own allocations (ActivationPlan, the block workspace, the head's
// chunk, statistics) plus a fixed runtime share measured on this code (binary, Swift runtime, OpenBLAS's
// per-thread buffers); bench/NOTES.md compares the plans against peak RSS.

import Formats

public struct MemoryPlan: Sendable {
  public struct Item: Sendable {
    public var what: String
    public var bytes: Int
  }
  public var tool: String
  public var residency: LlamaModel.Residency
  /// Sequences per block forward (calibration, scoring) or per micro-batch (training).
  public var batchSize: Int
  /// Calibration or scoring hidden states kept in memory (bytes); beyond it they go to a temporary file.
  public var hiddenBudget: Int
  /// Scoring: sequences per layer-major sweep.
  public var sweepSequences: Int
  /// Fine-tuning: bytes the exact gradient initialisation may hold at once.
  public var initBudget: Int
  /// Fine-tuning: layers that keep only their input and are recomputed in backward.
  public var recomputedLayers = 0
  public var items: [Item]
  public var budget: Int
  public var budgetSource: String
  public var total: Int { items.reduce(0) { $0 + $1.bytes } }
  public var fits: Bool { total <= budget }

  public var lines: [String] {
    var out = ["memory plan (\(tool)): \(residency == .resident ? "every weight resident in f32" : "streamed: one block at a time, embedding and head in their stored dtype"), batch \(batchSize)"
      + (recomputedLayers > 0 ? ", \(recomputedLayers) layers recomputed in backward" : "")]
    for item in items { out.append("  " + MemoryPlan.megabytes(item.bytes).leftPadded(9) + "  " + item.what) }
    out.append("  " + MemoryPlan.megabytes(total).leftPadded(9) + "  total, of \(MemoryPlan.megabytes(budget)) (\(budgetSource))" + (fits ? "" : ": DOES NOT FIT"))
    return out
  }

  public var json: JSONValue {
    .object(JSONObject([
      ("tool", .string(tool)), ("residency", .string(residency.rawValue)), ("batch_size", .number(String(batchSize))),
      ("recomputed_layers", .number(String(recomputedLayers))),
      ("total_bytes", .number(String(total))), ("budget_bytes", .number(String(budget))), ("budget_source", .string(budgetSource)),
      ("fits", .bool(fits)),
      ("items", .array(items.map { .object(JSONObject([("what", .string($0.what)), ("bytes", .number(String($0.bytes)))])) })),
    ]))
  }

  static func megabytes(_ bytes: Int) -> String { String(Double(bytes / 100_000) / 10) + " MB" }

  /// Refuses a plan that does not fit, with the plan as the message.
  public func check() throws(SurgeryError) {
    guard fits else {
      throw .memoryPlan("even the smallest plan needs \(MemoryPlan.megabytes(total)), more than \(MemoryPlan.megabytes(budget)) (\(budgetSource)):\n" + lines.joined(separator: "\n"))
    }
  }
}

extension String {
  fileprivate func leftPadded(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}

/// What the planner needs to know about a model: its shapes, and how its weights are stored.
public struct ModelFacts: Sendable {
  public var config: LlamaConfig
  /// Bytes per element of the stored projection weights (2 for BF16/F16, 4 for F32).
  public var storedBytes: Int
  public init(config: LlamaConfig, storedBytes: Int) {
    self.config = config
    self.storedBytes = storedBytes
  }

  /// Facts from an open checkpoint.
  public static func of(_ reader: any CheckpointReader, config: LlamaConfig) -> ModelFacts {
    let info = reader.infos.first { $0.name == "model.layers.0.self_attn.q_proj.weight" }
    return ModelFacts(config: config, storedBytes: max(1, (info?.dtype.bits ?? 32) / 8))
  }

  var names: [(String, [Int])] { LlamaTensors.names(config) }
  var parameters: Int { names.reduce(0) { $0 + $1.1.reduce(1, *) } }
  var blockFloats: Int { names.filter { $0.0.hasPrefix("model.layers.0.") }.reduce(0) { $0 + $1.1.reduce(1, *) } }
  /// (out, in) of the seven projections of a block.
  var projections: [(out: Int, inp: Int)] {
    LlamaTensors.projections.compactMap { p in
      names.first { $0.0 == "model.layers.0.\(p).weight" }.map { ($0.1[0], $0.1[1]) }
    }
  }
  var largestProjection: Int { projections.map { $0.out * $0.inp }.max() ?? 0 }
  /// Bytes of the weights held: every tensor in f32, or the streamed pieces (final norm, one block, and
  /// the largest stored tensor mapped while it is widened; with `headTokens`, the tokens per head pass,
  /// the head's widened vocabulary chunk and its mapped stored rows). Pruning never runs the head.
  func weights(_ residency: LlamaModel.Residency, headTokens: Int?) -> [MemoryPlan.Item] {
    let c = config
    switch residency {
    case .resident:
      return [.init(what: "weights, all \(parameters / 1_000_000)M parameters in f32", bytes: parameters * 4)]
    case .streamed:
      let N = headTokens ?? 1
      let chunkRows = LMHead.storedChunk(
        maxRows: StoredMatrix.chunkRows(rows: c.vocabSize, cols: c.hiddenSize), N: N,
        scratchCount: ActivationPlan.headScratch(c, N: N), V: c.vocabSize)
      var items: [MemoryPlan.Item] = [
        .init(what: "one block's weights in f32 (streamed from the checkpoint, \(c.layers) blocks)", bytes: (blockFloats + c.hiddenSize) * 4),
        .init(what: "stored tensor being widened (mapped pages, dropped after)", bytes: largestProjection * storedBytes),
      ]
      if headTokens != nil {
        items.insert(.init(
          what: "LM head chunk: \(chunkRows) vocabulary rows in f32 and their mapped stored pages (embedding and head stay stored)",
          bytes: chunkRows * c.hiddenSize * (4 + storedBytes)), at: 1)
      }
      return items
    }
  }
}

public enum MemoryPlanner {
  /// Process, Swift runtime, OpenBLAS's buffers, the tokenizer and allocator slack: what measured peaks
  /// leave beyond the planned items (SmolLM2 streamed: finetune 42 MB, eval 56 MB, prune 77 MB; the whole
  /// tiny-llama run peaks at 36 MB), rounded up. bench/NOTES.md compares plans with peaks.
  public static let runtime = 80_000_000
  static let runtimeItem = MemoryPlan.Item(what: "runtime (binary, libraries, BLAS buffers)", bytes: runtime)

  /// espalier prune: `windows` calibration windows of `seqLen` tokens (0 for magnitude).
  public static func prune(
    _ m: ModelFacts, method: PruneMethod, windows: Int, seqLen: Int, batch: Int, outputBytes: Int, budget: Int, budgetSource: String
  ) -> MemoryPlan {
    let c = m.config
    let calibrated = method != .magnitude && windows > 0
    let statistics = statistics(m, method)
    var candidates: [MemoryPlan] = []
    for residency in [LlamaModel.Residency.resident, .streamed] {
      for b in Set([min(batch, max(1, windows)), 1]).sorted(by: >) {
        for spill in [false, true] {
          var items = [runtimeItem]
          items += m.weights(residency, headTokens: nil)
          let hidden = calibrated ? windows * seqLen * c.hiddenSize * 4 : 0
          if calibrated {
            items.append(.init(what: "calibration hidden states (\(windows) × \(seqLen) × \(c.hiddenSize) f32)" + (spill ? ", in a temporary file" : ""), bytes: spill ? 0 : hidden))
            let acts = ActivationPlan(config: c, B: b, T: seqLen, headChunk: min(128, b * seqLen), training: false)
            items.append(.init(what: "block forward: activations and output for \(b) × \(seqLen)", bytes: acts.bytes(layers: c.layers) + b * seqLen * c.hiddenSize * 4))
          }
          items.append(.init(what: "\(method.rawValue) statistics and scratch of a block", bytes: statistics))
          items.append(.init(what: "output tensor being written (largest, output dtype)", bytes: m.largestProjection * outputBytes))
          candidates.append(MemoryPlan(
            tool: "prune", residency: residency, batchSize: b, hiddenBudget: spill ? 0 : hidden, sweepSequences: windows, initBudget: 0,
            items: items, budget: budget, budgetSource: budgetSource))
          if !calibrated { break }
        }
        if !calibrated { break }
      }
    }
    return candidates.first { $0.fits } ?? candidates.last!
  }

  /// A pruner's statistics and scratch for one block.
  static func statistics(_ m: ModelFacts, _ method: PruneMethod) -> Int {
    switch method {
    case .magnitude: return 0
    case .wanda: return m.projections.reduce(0) { $0 + $1.inp * 8 } + m.largestProjection * 5
    // A Double Hessian per projection during the block's pass, plus SparseGPT's working copies.
    case .sparsegpt: return m.projections.reduce(0) { $0 + $1.inp * $1.inp * 8 } + 3 * (m.projections.map { $0.inp * $0.inp * 8 }.max() ?? 0)
    }
  }

  /// espalier eval: windows of `seqLen` tokens, `batch` per forward.
  public static func eval(_ m: ModelFacts, seqLen: Int, batch: Int, windows: Int, budget: Int, budgetSource: String) -> MemoryPlan {
    let c = m.config
    var candidates: [MemoryPlan] = []
    for residency in [LlamaModel.Residency.resident, .streamed] {
      for b in Set([batch, 1]).sorted(by: >) {
        // A streamed model reads every block once per sweep: sweep as many windows as fit in memory.
        for sweep in Set([max(b, min(windows, 64)), b]).sorted(by: >) {
          var items = [runtimeItem]
          items += m.weights(residency, headTokens: b * seqLen)
          items.append(.init(what: "hidden states of a sweep (\(sweep) × \(seqLen) × \(c.hiddenSize) f32)", bytes: sweep * seqLen * c.hiddenSize * 4))
          let acts = ActivationPlan(config: c, B: b, T: seqLen, headChunk: min(128, b * seqLen), training: false)
          items.append(.init(what: "activations and block output for \(b) × \(seqLen)", bytes: acts.bytes(layers: c.layers) + b * seqLen * c.hiddenSize * 4))
          candidates.append(MemoryPlan(
            tool: "eval", residency: residency, batchSize: b, hiddenBudget: sweep * seqLen * c.hiddenSize * 4, sweepSequences: sweep,
            initBudget: 0, items: items, budget: budget, budgetSource: budgetSource))
        }
      }
    }
    return candidates.first { $0.fits } ?? candidates.last!
  }

  /// espalier generate: one sequence of up to `capacity` positions, the prompt fed `chunk` tokens at a time.
  public static func generate(_ m: ModelFacts, capacity: Int, chunk: Int, budget: Int, budgetSource: String) -> MemoryPlan {
    let c = m.config
    let candidates = [LlamaModel.Residency.resident, .streamed].map { residency in
      var items = [runtimeItem]
      items += m.weights(residency, headTokens: 1)
      items.append(.init(
        what: "KV cache (\(c.layers) layers × \(capacity) positions × \(c.kvDim) × 2, f32) and buffers for \(min(chunk, capacity)) tokens",
        bytes: Decoder.bytes(c, chunk: min(chunk, capacity), capacity: capacity)))
      return MemoryPlan(
        tool: "generate", residency: residency, batchSize: 1, hiddenBudget: 0, sweepSequences: 1, initBudget: 0, items: items,
        budget: budget, budgetSource: budgetSource)
    }
    return candidates.first { $0.fits } ?? candidates.last!
  }

  /// espalier finetune: adapters of `rank` on `targets` (short names), micro-batches of `batch` × `seqLen`.
  /// Fastest first: resident with every layer's activations kept; streamed; then resident and streamed
  /// with as few layers as fit recomputed in backward (one more forward of those layers per step).
  /// LoSA (`losa`: its calibration windows and pruner) adds its re-prune phase: the pruned and the dense
  /// reference calibration streams, the reference's block, the pruner's statistics and a merge buffer.
  public static func finetune(
    _ m: ModelFacts, method: AdapterMethod, rank: Int, targets: [String], batch: Int, seqLen: Int, initialization: AdapterInit,
    budget: Int, budgetSource: String, losa: (windows: Int, pruner: PruneMethod)? = nil
  ) -> MemoryPlan {
    let c = m.config
    let chosen = zip(LlamaTensors.projections, m.projections).filter { targets.contains(String($0.0.split(separator: ".").last!)) }.map(\.1)
    let adapterFloats = c.layers * chosen.reduce(0) { total, p in
      total + (method == .spp ? SPPLinear.rowBlocks * p.inp + p.out : rank * (p.out + p.inp))
    }
    let largest = chosen.map { $0.out * $0.inp }.max() ?? 0
    let denseTargets = c.layers * chosen.reduce(0) { $0 + $1.out * $1.inp } * 4
    let sketchBytes = c.layers * GradientInit.sketchBytes(chosen, rank: rank)
    var candidates: [MemoryPlan] = []
    for (residency, recompute) in [(LlamaModel.Residency.resident, false), (.streamed, false), (.resident, true), (.streamed, true)] {
      var items = [runtimeItem]
      items += m.weights(residency, headTokens: batch * seqLen)
      // Checkpoints and the final adapter are written a tensor at a time from these arenas.
      items.append(.init(what: "adapters, gradients and AdamW moments (\(adapterFloats) parameters)", bytes: adapterFloats * 4 * 4))
      switch method {
      case .lors, .spp, .losa: items.append(.init(what: "recomputed merged weight (largest projection, f32)", bytes: largest * 4))
      case .sqft: items.append(.init(what: "SQFT's merged weights and masks of every adapted projection", bytes: denseTargets / 4 * 5))
      case .lora: break
      }
      if let losa {
        let streams = 2 * losa.windows * seqLen * c.hiddenSize * 4
        let reference = m.weights(.streamed, headTokens: nil).reduce(0) { $0 + $1.bytes }
        items.append(.init(
          what: "LoSA re-prune: pruned and dense calibration streams (2 × \(losa.windows) × \(seqLen) × \(c.hiddenSize) f32), the dense model's block, "
            + "\(losa.pruner.rawValue) statistics, a merge buffer",
          bytes: streams + reference + statistics(m, losa.pruner) + largest * 4))
      }
      var initBudget = 0
      switch initialization {
      case .random: break
      case .gradient:
        items.append(.init(what: "gradient init: one-pass sketches of every target's gradient (no dense gradient)", bytes: sketchBytes))
      case .gradientExact:
        // Dense gradients in groups: what is left after a full activation arena, but at least the largest one.
        let full = ActivationPlan(config: c, B: batch, T: seqLen, training: true).bytes(layers: c.layers)
        initBudget = min(denseTargets, max(largest * 4, min(2_000_000_000, budget - items.reduce(0) { $0 + $1.bytes } - full)))
        items.append(.init(what: "exact gradient init: dense gradients, \(max(1, (denseTargets + initBudget - 1) / max(1, initBudget))) pass(es)", bytes: initBudget + largest * 4))
      }
      // Recompute as few layers as fit: the activations may use what the rest leaves.
      let left = budget - items.reduce(0) { $0 + $1.bytes }
      var recomputed = 0
      if recompute {
        recomputed = c.layers
        while recomputed > 1 && ActivationPlan(config: c, B: batch, T: seqLen, training: true, recomputedLayers: recomputed - 1).bytes(layers: c.layers) <= left {
          recomputed -= 1
        }
      }
      let acts = ActivationPlan(config: c, B: batch, T: seqLen, training: true, recomputedLayers: recomputed)
      items.insert(.init(
        what: recomputed > 0 ? "activations for \(batch) × \(seqLen): \(recomputed) of \(c.layers) layers keep only their input and are recomputed in backward"
          : "activations of every layer for \(batch) × \(seqLen) (kept for backward)", bytes: acts.bytes(layers: c.layers)), at: items.count - (initialization == .random ? 0 : 1))
      var plan = MemoryPlan(
        tool: "finetune", residency: residency, batchSize: batch, hiddenBudget: 0, sweepSequences: 0, initBudget: initBudget, items: items,
        budget: budget, budgetSource: budgetSource)
      plan.recomputedLayers = recomputed
      candidates.append(plan)
    }
    return candidates.first { $0.fits } ?? candidates.last!
  }
}
