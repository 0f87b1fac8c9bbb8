// Layer-sequential pruning of a Llama model (algorithms.md §1.1, the SparseGPT driver's default mode):
// the calibration windows' hidden states enter block i as produced by the already-pruned blocks
// 0..<i; the statistics of all seven projections of block i come from one pass through the still-dense
// block; block i is pruned; then it is run again to produce the inputs of block i+1. Only one block's
// inputs are held (nsamples × seqLen × hidden floats), in memory or, past `maxMemory`, in a
// memory-mapped temporary file that the kernel pages out (Formats' ScratchFloats); magnitude pruning
// needs no calibration at all.

import Formats

public enum PruneMethod: String, CaseIterable, Sendable {
  case magnitude, wanda, sparsegpt
}

public struct PruneOptions: Sendable {
  public var method: PruneMethod
  public var target: SparsityTarget
  /// Sequences run through a block at once.
  public var batchSize = 4
  public var percdamp = 0.01
  public var blockSize = 128
  /// Which projections to prune (HF weight names); default: the seven of every block.
  public var selects: @Sendable (String) -> Bool = { _ in true }
  /// Bytes of calibration hidden states kept in memory; beyond it they live in a temporary file.
  public var maxMemory = 2_000_000_000
  /// Directory for that file.
  public var temporaryDirectory = "/tmp"
  /// Unstructured only: per block, the zeros per row for each input width (LoSA's per-layer rates);
  /// a block or width not listed takes `target`.
  public var layerRowZeros: [[Int: Int]]?
  /// Unstructured only: per block, the sparsity of its projections (a rates file, or OWL's profile once
  /// resolved); Wanda prunes ⌊cols·rate⌋ per row, SparseGPT and magnitude the rate. `layerRowZeros` goes
  /// first.
  public var layerSparsity: LayerSparsity?
  /// Unstructured only: derive `layerSparsity` from the dense model's outliers first (OWL). Resolved by
  /// PrunedCheckpoint.prune (a pass over the calibration windows before pruning); Pruner ignores it.
  public var owl: OWLSettings?
  /// The ranks sharing the calibration windows (MPI), or one process.
  public var cluster = Cluster.single

  /// Block l's target: its rate from `layerSparsity`, else `target`.
  func target(block l: Int) -> SparsityTarget {
    guard let rates = layerSparsity?.rates, l < rates.count else { return target }
    return .unstructured(rates[l])
  }

  /// Refuses a layerwise profile with an N:M target (OWL's mixed N:M variant is not implemented).
  public func checkProfile() throws(SurgeryError) {
    if case .nm(let p) = target, layerSparsity != nil || owl != nil {
      throw .invalidRequest("a layerwise sparsity profile needs an unstructured target; \(p) keeps N:M in every block")
    }
  }

  public init(method: PruneMethod, target: SparsityTarget) {
    self.method = method
    self.target = target
  }
}

public struct PrunedTensor: Sendable, Equatable {
  public var name: String
  public var zeros: Int
  public var elements: Int
  public var sparsity: Double { elements == 0 ? 0 : Double(zeros) / Double(elements) }
}

public struct PruneReport: Sendable {
  public var tensors: [PrunedTensor]
  public var warnings: [String]
  /// With a dense reference: per block, Σ_c ‖Y_c − Ŷ_c‖² / ‖Y_c‖² / H over the calibration windows, Y the
  /// reference's block output on its own inputs, Ŷ the pruned block's on the pruned stream (LoSA's loss).
  public var reconstruction: [Double] = []
  /// The per-block rates pruned to, when not uniform.
  public var layerSparsity: LayerSparsity?
  public var zeros: Int { tensors.reduce(0) { $0 + $1.zeros } }
  public var elements: Int { tensors.reduce(0) { $0 + $1.elements } }
  public var sparsity: Double { elements == 0 ? 0 : Double(zeros) / Double(elements) }
}

public enum Calibration {
  /// `count` windows of `length` tokens at seeded uniform start positions in the token stream (the
  /// documents of the calibration text, joined). Deterministic for a seed.
  public static func windows(from tokens: [Int32], count: Int, length: Int, seed: UInt64) throws(SurgeryError) -> [[Int32]] {
    guard tokens.count > length else {
      throw .calibrationTooShort(tokens: tokens.count, windowLength: length)
    }
    var random = SplitMix64(seed: seed)
    return (0..<count).map { _ in
      let start = Int(random.next() % UInt64(tokens.count - length))
      return Array(tokens[start..<(start + length)])
    }
  }
}

/// A linear layer that records its inputs for a pruning statistic, then forwards unchanged.
final class RecordingLinear: LinearLayer {
  let base: LinearLayer
  let record: (UnsafePointer<Float>, Int) -> Void
  var inFeatures: Int { base.inFeatures }
  var outFeatures: Int { base.outFeatures }
  init(_ base: LinearLayer, record: @escaping (UnsafePointer<Float>, Int) -> Void) {
    self.base = base
    self.record = record
  }
  func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    record(inp, N)
    base.forward(out: out, inp: inp, N: N)
  }
  func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    base.backward(dinp: dinp, dout: dout, inp: inp, N: N)
  }
}

public enum Pruner {
  /// Prunes `model`'s weights in place, block by block. `windows` are calibration token windows of equal
  /// length (unused by magnitude). `prepareBlock(l)` runs once block l's weights are readable, before any
  /// statistic (LoSA merges its adapters there). After block l is pruned (and, calibrated, has produced the
  /// next block's inputs), `blockDone(l)` runs while its weights are still readable through the model: a
  /// streamed model's writer takes them there. With a `reference` model (same shapes) the same windows also
  /// run through it, on their own stream, and every block's reconstruction loss is reported.
  /// `progress(layer, layers)` after each block.
  public static func prune(
    _ model: LlamaModel, windows: [[Int32]], options: PruneOptions, reference: LlamaModel? = nil,
    prepareBlock: ((Int) throws(SurgeryError) -> Void)? = nil, blockDone: ((Int) throws(SurgeryError) -> Void)? = nil,
    progress: ((Int, Int) -> Void)? = nil
  ) throws(SurgeryError) -> PruneReport {
    let c = model.config
    try options.checkProfile()
    if let rates = options.layerSparsity?.rates, rates.count != c.layers {
      throw .invalidRequest("\(rates.count) layer sparsities for a model of \(c.layers) blocks")
    }
    var report = PruneReport(tensors: [], warnings: [])
    report.layerSparsity = options.layerSparsity
    if options.method == .magnitude {
      for l in 0..<c.layers {
        try model.prepare(block: l)
        try prepareBlock?(l)
        for p in LlamaTensors.projections {
          try pruneMagnitude(model, "model.layers.\(l).\(p).weight", options.target(block: l), options, &report)
        }
        try blockDone?(l)
        progress?(l + 1, c.layers)
      }
      return report
    }
    let T = try windowLength(windows)
    let cluster = options.cluster
    if reference != nil && cluster.size > 1 { throw .invalidRequest("a reconstruction reference (LoSA) runs in one process, not under MPI") }
    let mine = try calibrationShare(windows, options: options)
    let sweep = try embeddedSweep(model, windows: windows, options: options)
    if sweep.spilled { report.warnings.append("calibration states (\(sweep.hiddenBytes) bytes) spilled to a temporary file") }
    let dense = try reference.map { (reference) throws(SurgeryError) in try embeddedSweep(reference, windows: windows, options: options) }
    for l in 0..<c.layers {
      try model.prepare(block: l)
      try prepareBlock?(l)
      let names = LlamaTensors.projections.map { "model.layers.\(l).\($0).weight" }
      let selected = names.indices.filter { options.selects(names[$0]) }
      let original = model.linears[l]
      var wanda: [WandaStatistics?] = Array(repeating: nil, count: names.count)
      var hessians: [HessianAccumulator?] = Array(repeating: nil, count: names.count)
      for p in selected {
        let columns = original[p].inFeatures
        if options.method == .wanda {
          let stats = WandaStatistics(columns: columns, deferred: cluster.size > 1)
          wanda[p] = stats
          model.linears[l][p] = RecordingLinear(original[p]) { x, n in stats.add(x, tokens: n, sequences: n / T) }
        } else {
          let h = HessianAccumulator(columns: columns)
          hessians[p] = h
          model.linears[l][p] = RecordingLinear(original[p]) { x, n in h.add(x, tokens: n, sequences: n / T) }
        }
      }
      // Statistics from the dense block, on inputs from the pruned blocks before it (this rank's share),
      // then reduced: Wanda's to every rank, each Hessian to the rank that prunes with it.
      try sweep.run(block: l, advance: false)
      model.linears[l] = original
      func owner(_ i: Int) -> Int { i % cluster.size }
      for (i, p) in selected.enumerated() {
        try wanda[p]?.reduce(on: cluster, before: mine.lowerBound, total: windows.count)
        try hessians[p]?.reduce(on: cluster, before: mine.lowerBound, total: windows.count, to: owner(i))
      }
      // Wanda's masks are cheap and the same bits on every rank; SparseGPT's solves are shared out, one
      // projection per rank in turn, and each result is broadcast from the rank that computed it.
      var raisedDamp = [Double](repeating: options.percdamp, count: names.count)
      for (i, p) in selected.enumerated() {
        let entry = model.params.layout.entry(names[p])!
        let (rows, cols) = (entry.shape[0], entry.shape[1])
        let weight = model.params.base + entry.offset
        let rowZeros = options.layerRowZeros.flatMap { l < $0.count ? $0[l][cols] : nil }
        if let stats = wanda[p] {
          MaskSelection.apply(
            Wanda.mask(weight, rows: rows, cols: cols, statistics: stats, target: options.target(block: l), rowZeros: rowZeros), to: weight)
        } else if let h = hessians[p], owner(i) == cluster.rank {
          let target = rowZeros.map { SparsityTarget.unstructured(Double($0) / Double(cols)) } ?? options.target(block: l)
          let result = try h.withValues { (hessian) throws(SurgeryError) in
            try SparseGPT.prune(
              weight, rows: rows, cols: cols, hessian: hessian, target: target, percdamp: options.percdamp,
              blockSize: options.blockSize)
          }
          raisedDamp[p] = result.percdamp
        }
      }
      for (i, p) in selected.enumerated() {
        let entry = model.params.layout.entry(names[p])!
        if hessians[p] != nil && cluster.size > 1 {
          try cluster.broadcast(model.params.base + entry.offset, bytes: entry.count * MemoryLayout<Float>.stride, from: owner(i))
          try cluster.broadcast(&raisedDamp[p], bytes: MemoryLayout<Double>.stride, from: owner(i))
        }
        if raisedDamp[p] != options.percdamp {
          report.warnings.append("\(names[p]): Cholesky failed; percdamp raised to \(raisedDamp[p])")
        }
        report.tensors.append(count(model.params.base + entry.offset, name: names[p], elements: entry.count))
      }
      // The pruned block produces the next block's inputs.
      try sweep.run(block: l, advance: true)
      if let dense, let reference {
        try reference.prepare(block: l)
        try dense.run(block: l, advance: true)
        report.reconstruction.append(reconstructionLoss(dense: dense.hidden.base, pruned: sweep.hidden.base, rows: dense.hidden.count / c.hiddenSize, H: c.hiddenSize))
      }
      try blockDone?(l)
      progress?(l + 1, c.layers)
    }
    return report
  }

  /// The calibration windows' common length; none, or windows of different lengths, are refused.
  static func windowLength(_ windows: [[Int32]]) throws(SurgeryError) -> Int {
    guard let first = windows.first, windows.allSatisfy({ $0.count == first.count }) else {
      throw .calibrationWindows(windows.isEmpty ? "none given" : "they differ in length")
    }
    return first.count
  }

  /// The windows a rank calibrates on: whole batches, contiguous, so every batch (and every statistic
  /// folded from it) is the one a single process forms. Refuses more ranks than batches.
  static func calibrationShare(_ windows: [[Int32]], options: PruneOptions) throws(SurgeryError) -> Range<Int> {
    let batch = max(1, min(options.batchSize, windows.count))
    let batches = (windows.count + batch - 1) / batch
    guard batches >= options.cluster.size else {
      throw .invalidRequest(
        "\(options.cluster.size) ranks share \(batches) calibration batches of \(batch) windows: give every rank one (more --nsamples, or a smaller --batch-size)")
    }
    return options.cluster.share(of: windows.count, inGroupsOf: batch)
  }

  /// This rank's windows through `model`'s embedding, ready for its blocks, batched and held as the
  /// options plan.
  static func embeddedSweep(_ model: LlamaModel, windows all: [[Int32]], options: PruneOptions) throws(SurgeryError) -> LayerSweep {
    let windows = Array(all[try calibrationShare(all, options: options)])
    let sweep = try LayerSweep(
      model: model, sequences: windows, batch: max(1, min(options.batchSize, all.count)), maxMemory: options.maxMemory,
      temporaryDirectory: options.temporaryDirectory)
    try sweep.embed()
    return sweep
  }

  /// LoSA's reconstruction loss of a block: Σ_c Σ_rows (Y − Ŷ)² / Σ_rows Y², averaged over the H channels.
  public static func reconstructionLoss(dense: UnsafePointer<Float>, pruned: UnsafePointer<Float>, rows: Int, H: Int) -> Double {
    var energy = [Double](repeating: 0, count: H), error = [Double](repeating: 0, count: H)
    for r in 0..<rows {
      let (y, yhat) = (dense + r * H, pruned + r * H)
      for c in 0..<H {
        let (v, d) = (Double(y[c]), Double(y[c]) - Double(yhat[c]))
        energy[c] += v * v
        error[c] += d * d
      }
    }
    var loss = 0.0
    for c in 0..<H where energy[c] > 0 { loss += error[c] / energy[c] }
    return loss / Double(H)
  }

  static func pruneMagnitude(
    _ model: LlamaModel, _ name: String, _ target: SparsityTarget, _ options: PruneOptions, _ report: inout PruneReport
  ) throws(SurgeryError) {
    guard options.selects(name), let entry = model.params.layout.entry(name) else { return }
    let weight = model.params.base + entry.offset
    MaskSelection.apply(Magnitude.mask(weight, rows: entry.shape[0], cols: entry.shape[1], target: target), to: weight)
    report.tensors.append(count(weight, name: name, elements: entry.count))
  }

  static func count(_ weight: UnsafePointer<Float>, name: String, elements: Int) -> PrunedTensor {
    var zeros = 0
    for i in 0..<elements where weight[i] == 0 { zeros += 1 }
    return PrunedTensor(name: name, zeros: zeros, elements: elements)
  }
}
