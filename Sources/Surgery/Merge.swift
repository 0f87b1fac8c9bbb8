// Merging adapters into their base, tensor by tensor (espalier merge). Every method in PEFT's tensor
// names (lora_A: input side, lora_B: output side; see AdapterSet.peftNames):
//   lors   W' = (W + s·lora_B·lora_A) ⊙ M          M = (W ≠ 0)
//   sqft   W' = W + (s·lora_B·lora_A) ⊙ M           (the same values; losa too, its rank per block)
//   lora   W' = W + s·lora_B·lora_A                 dense: only with allowDensify
//   spp    W' = W ⊙ (1 + s·expand(lora_A)·lora_B)   lora_A (16, in), lora_B (out, 1)
// in f32, then cast to the base's storage dtype. A kept weight (W ≠ 0) must never become zero, neither
// exactly in f32 nor by underflow in the cast: such weights are counted and set to the smallest normal
// number of the storage dtype with the value's sign (or refused under `strict`).

import Formats

public enum Merge {
  /// W' (out × in, f32) of one projection. `a` and `b` are PEFT's lora_A and lora_B.
  public static func mergedWeight(
    method: AdapterMethod, weight: [Float], out: Int, inp: Int, a: [Float], b: [Float], rank: Int, scale: Float
  ) -> [Float] {
    var merged = [Float](repeating: 0, count: out * inp)
    weight.withUnsafeBufferPointer { w in
      a.withUnsafeBufferPointer { a in
        b.withUnsafeBufferPointer { b in
          merged.withUnsafeMutableBufferPointer { m in
            let (w, a, b, m) = (w.baseAddress!, a.baseAddress!, b.baseAddress!, m.baseAddress!)
            switch method {
            case .lors, .sqft, .losa:
              // PEFT's lora_B (out, r) is LoRS' A, its lora_A (r, in) LoRS' B; sqft's values are the same.
              LoRSLinear.merge(into: m, weight: w, a: b, b: a, out: out, in: inp, rank: rank, scale: scale)
            case .lora:
              m.update(from: w, count: out * inp)
              Gemm.sgemm(m, b, a, m: out, n: inp, k: rank, alpha: scale, beta: 1)
            case .spp:
              SPPLinear.merge(into: m, weight: w, a: a, b: b, out: out, in: inp, scale: scale)
            }
          }
        }
      }
    }
    return merged
  }

  /// The smallest positive normal number of a floating-point storage dtype, as f32 (DType.smallestNormal;
  /// f32's for anything else, since the merge is computed in f32).
  public static func smallestNormal(_ dtype: DType) -> Float {
    dtype.smallestNormal ?? Float.leastNormalMagnitude
  }

  /// The merged weight as a tensor of `dtype`, with kept weights that would become zero raised to the
  /// smallest normal of the dtype (their count returned). `weight` decides what is kept (W ≠ 0).
  public static func cast(
    _ merged: [Float], weight: [Float], name: String, shape: [Int], dtype: DType
  ) throws(FormatError) -> (Tensor, raised: Int) {
    var values = merged
    var raised = 0
    let tiny = smallestNormal(dtype)
    /// A merged value that is not finite where the base's is: the adapter overflows the weight.
    func refuseNonFinite(_ v: [Float]) throws(FormatError) {
      let bad = v.indices.reduce(0) { $0 + (!v[$1].isFinite && weight[$1].isFinite ? 1 : 0) }
      if bad > 0 { throw .io(file: name, reason: "merging gives \(bad) NaN/Inf values in \(dtype) (the adapter overflows the weight); nothing written") }
    }
    try refuseNonFinite(values)
    func fix(_ k: Int) {
      let negative = values[k] == 0 ? weight[k] < 0 : values[k] < 0
      values[k] = negative ? -tiny : tiny
      raised += 1
    }
    for k in values.indices where weight[k] != 0 && values[k] == 0 { fix(k) }
    var tensor = try Tensor(name: name, shape: shape, float32: values, as: dtype)
    if dtype != .f32 {
      let back = try tensor.float32()
      try refuseNonFinite(back)
      var underflowed = false
      for k in values.indices where weight[k] != 0 && back[k] == 0 {
        fix(k)
        underflowed = true
      }
      if underflowed { tensor = try Tensor(name: name, shape: shape, float32: values, as: dtype) }
    }
    return (tensor, raised)
  }
}

public struct MergeOptions: Sendable {
  /// Merge a plain (dense) LoRA adapter, filling the base's zeros.
  public var allowDensify = false
  /// Fail instead of raising kept weights that would become zero.
  public var strict = false
  public var output = ConvertOptions()
  public init() {}
}

public struct MergeReport: Sendable {
  public var method: AdapterMethod
  public var scale: Float
  public var mergedTensors: Int
  /// Kept weights raised to the smallest normal (per tensor, only those with any).
  public var raised: [(name: String, count: Int)]
  public var files: [String]
}

/// What an adapter directory says about itself: PEFT's config, and espalier.json when we wrote it.
public struct AdapterDescription: Sendable {
  public var method: AdapterMethod
  public var scale: Float
  public var rank: Int
  public var baseFingerprint: String?
  public var othersFingerprint: String?
  public var prefixes: [String]
  /// adapter_config.json as read.
  public var config: PEFTAdapterConfig
  /// Whether the scale came from espalier.json (else it is the one adapter_config.json implies).
  public var scaleRecorded: Bool

  public init(directory: String, weights: SafetensorsFile) throws(SurgeryError) {
    let config: PEFTAdapterConfig
    do { config = try PEFTAdapter.readConfig(directory) } catch { throw .format(error) }
    self.config = config
    scaleRecorded = false
    let recorded: EspalierAdapterRecord?
    do { recorded = try EspalierAdapterRecord.read(directory) } catch { throw .format(error) }
    if let recorded {
      guard let method = AdapterMethod(rawValue: recorded.method) else {
        throw .checkpoint(path: directory, problems: ["espalier.json names an unknown method `\(recorded.method)`"])
      }
      self.method = method
      scale = Float(recorded.scale)
      scaleRecorded = true
      baseFingerprint = recorded.baseFingerprint
      othersFingerprint = recorded.othersFingerprint
    } else {
      method = .lora
      othersFingerprint = nil
      scale = (config.useRSLoRA ? ScaleRule.rslora : ScaleRule.lora).scale(alpha: config.alpha, rank: config.rank)
      baseFingerprint = nil
    }
    rank = config.rank
    var prefixes: [String] = []
    for entry in weights.entries {
      let name = entry.info.name
      guard name.hasPrefix(PEFTAdapter.prefix), name.hasSuffix(".lora_A.weight") else { continue }
      prefixes.append(String(name.dropFirst(PEFTAdapter.prefix.count).dropLast(".lora_A.weight".count)))
    }
    self.prefixes = prefixes.sorted { AdapterSet.order(of: $0) < AdapterSet.order(of: $1) }
  }
}

/// An adapter checked against its base: what it is, its weights, and the factors of every weight it
/// touches (by module prefix).
public struct MergePlan {
  public var adapter: AdapterDescription
  public var weights: SafetensorsFile
  public var factors: [String: (a: TensorInfo, b: TensorInfo)]

  /// The merged f32 weight of `info` (a base weight this adapter touches), from the base's values.
  public func merged(_ info: TensorInfo, base w: [Float]) throws(FormatError) -> [Float]? {
    guard info.name.hasSuffix(".weight"), let (a, b) = factors[String(info.name.dropLast(7))] else { return nil }
    let (aValues, bValues) = (try weights.tensor(a.name).float32(), try weights.tensor(b.name).float32())
    for (name, values) in [(a.name, aValues), (b.name, bValues)] {
      let bad = values.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
      if bad > 0 { throw .io(file: weights.path, reason: "adapter tensor `\(name)` holds \(bad) NaN/Inf values; nothing merged") }
    }
    return Merge.mergedWeight(
      method: adapter.method, weight: w, out: info.shape[0], inp: info.shape[1], a: aValues, b: bValues, rank: a.shape[0],
      scale: adapter.scale)
  }
}

extension Merge {
  /// What adapter_config.json (and espalier.json) say about one adapted module, against its tensors: PEFT
  /// must adapt it (target_modules, layers_to_transform), at the rank its lora_A has, with the scale
  /// espalier.json records. Loaders that trust the config would otherwise build another model than merge.
  static func configProblems(_ adapter: AdapterDescription, _ prefix: String, rank: Int) -> [String] {
    let config = adapter.config
    var problems: [String] = []
    if !config.covers(prefix) {
      problems.append("`\(prefix)` has factors, but adapter_config.json's target_modules \(config.targetModules)"
        + (config.layersToTransform.map { " / layers_to_transform \($0)" } ?? "") + " do not cover it")
    }
    guard adapter.method != .spp else { return problems }  // SPP's factors are not rank-r (its r is unused)
    if config.rank(of: prefix) != rank {
      problems.append("`\(prefix)`: lora_A has rank \(rank), adapter_config.json says r = \(config.rank(of: prefix))")
    } else if adapter.scaleRecorded {
      let implied = config.scale(of: prefix)
      if abs(implied - Double(adapter.scale)) > 1e-5 * abs(implied) {
        problems.append("`\(prefix)`: espalier.json's scale \(adapter.scale) disagrees with adapter_config.json "
          + "(lora_alpha \(config.alphaPattern[prefix] ?? config.alpha), r \(config.rank(of: prefix)), use_rslora \(config.useRSLoRA) give \(implied))")
      }
    }
    return problems
  }

  /// Reads the adapter in `adapterDirectory` and checks it against `base`: method, shapes and the recorded
  /// base fingerprint. Every mismatch is listed in one `.checkpoint(path: adapterDirectory, ...)` error.
  public static func plan(base: any CheckpointReader, adapterDirectory: String, allowDensify: Bool) throws(SurgeryError) -> MergePlan {
    let weights: SafetensorsFile
    do { weights = try PEFTAdapter.openWeights(adapterDirectory) } catch { throw .format(error) }
    let adapter = try AdapterDescription(directory: adapterDirectory, weights: weights)
    var problems: [String] = []
    if adapter.method == .lora && !allowDensify {
      problems.append("a plain LoRA adapter merges densely and fills the base's zeros; pass --allow-densify to do it anyway")
    }
    let infos = Dictionary(base.infos.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    var factors: [String: (a: TensorInfo, b: TensorInfo)] = [:]
    for prefix in adapter.prefixes {
      guard let w = infos[prefix + ".weight"], w.shape.count == 2 else {
        problems.append("the base has no 2-D weight `\(prefix).weight` for the adapter's `\(prefix)`")
        continue
      }
      let a = weights.entries.first { $0.info.name == PEFTAdapter.prefix + prefix + ".lora_A.weight" }!.info
      guard let b = weights.entries.first(where: { $0.info.name == PEFTAdapter.prefix + prefix + ".lora_B.weight" })?.info else {
        problems.append("`\(prefix)` has lora_A but no lora_B")
        continue
      }
      let (out, inp) = (w.shape[0], w.shape[1])
      let expected: ([Int], [Int]) = adapter.method == .spp ? ([SPPLinear.rowBlocks, inp], [out, 1]) : ([a.shape.first ?? 0, inp], [out, a.shape.first ?? 0])
      if a.shape != expected.0 || b.shape != expected.1 || (adapter.method == .spp && out % SPPLinear.rowBlocks != 0) {
        problems.append("`\(prefix)`: lora_A \(a.shape) and lora_B \(b.shape) do not fit the base weight \(w.shape) for \(adapter.method.rawValue) (expected \(expected.0) and \(expected.1))")
        continue
      }
      factors[prefix] = (a, b)
      problems += configProblems(adapter, prefix, rank: a.shape.first ?? 0)
    }
    if let recorded = adapter.baseFingerprint, problems.isEmpty {
      var hasher = BaseFingerprint()
      for prefix in adapter.prefixes {
        do {
          let values = try base.tensor(prefix + ".weight").float32()
          values.withUnsafeBufferPointer { hasher.add(prefix, $0) }
          base.release(prefix + ".weight")
        } catch { throw .format(error) }
      }
      if hasher.value != recorded {
        problems.append("the adapter was trained on another base: espalier.json records \(recorded), \(base.path) gives \(hasher.value)")
      }
    }
    if let recorded = adapter.othersFingerprint, problems.isEmpty {
      let found: String
      do { found = try BaseFingerprint.others(base, excluding: adapter.prefixes) } catch { throw .format(error) }
      if found != recorded {
        problems.append("the base's other tensors (embedding, norms, head, untouched projections) differ from the ones the adapter was trained with: espalier.json records \(recorded), \(base.path) gives \(found)")
      }
    }
    guard problems.isEmpty else { throw .checkpoint(path: adapterDirectory, problems: problems) }
    return MergePlan(adapter: adapter, weights: weights, factors: factors)
  }

  /// Merges the adapter in `adapterDirectory` into `base`, streaming tensor by tensor into `output`
  /// (written complete or not at all). Refuses, listing every problem, an adapter whose method, shapes or
  /// recorded base fingerprint do not fit.
  public static func run(
    base: any CheckpointReader, adapterDirectory: String, output: String, options: MergeOptions
  ) throws(SurgeryError) -> MergeReport {
    do {
      try OutputPath.claim(output, overwrite: options.output.overwrite, inputs: [base.path, adapterDirectory])
    } catch { throw .format(error) }
    let plan = try plan(base: base, adapterDirectory: adapterDirectory, allowDensify: options.allowDensify)
    let (adapter, factors) = (plan.adapter, plan.factors)

    final class Tally: @unchecked Sendable { var raised: [(name: String, count: Int)] = [] }
    let tally = Tally()
    let (method, scale, strict) = (adapter.method, adapter.scale, options.strict)
    let sources = base.infos.map { info -> TensorSource in
      let prefix = info.name.hasSuffix(".weight") ? String(info.name.dropLast(7)) : ""
      guard factors[prefix] != nil else {
        return TensorSource(info: info, load: { try base.tensor(info.name) }, release: { base.release(info.name) })
      }
      return TensorSource(info: info, load: {
        let w = try base.tensor(info.name).float32()
        let merged = try plan.merged(info, base: w)!
        let (tensor, raised) = try Merge.cast(merged, weight: w, name: info.name, shape: info.shape, dtype: info.dtype)
        if raised > 0 {
          if strict {
            throw FormatError.io(file: base.file(of: info.name), reason: "tensor `\(info.name)`: \(raised) kept weights would become zero in \(info.dtype.rawValue) (--strict)")
          }
          tally.raised.append((info.name, raised))
        }
        return tensor
      }, release: { base.release(info.name) })
    }
    let files: [String]
    do {
      let side = try base.sideFiles()
      files = try Converter.writeDirectory(sources, sideFiles: side, to: output, options: options.output)
    } catch { throw .format(error) }
    return MergeReport(method: method, scale: scale, mergedTensors: factors.count, raised: tally.raised, files: files)
  }
}
