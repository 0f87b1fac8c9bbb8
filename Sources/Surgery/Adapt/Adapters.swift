// The trainable adapters of a model, for any of the four methods: every factor in one arena laid out by
// a ParamLayout, gradients in a second arena with the same layout (so the optimizer is one flat loop),
// attached to the model by replacing its projections with the method's layer.
//
// Tensor names inside the arena are "<projection prefix>.lora_A" / ".lora_B" in each method's own
// convention; the shapes differ:
//   lors, losa  lora_A (out, r)   lora_B (r, in)    ΔW = s·A·B            (LoRS names: swapped against PEFT)
//   lora, sqft  lora_A (r, in)    lora_B (out, r)   ΔW = s·B·A            (PEFT names)
//   spp         lora_A (16, in)   lora_B (out, 1)   ΔW = s·W ⊙ expand(A)·b
// `peftNames` is the one place that maps them to PEFT's adapter_model.safetensors names.

import Formats

public enum AdapterMethod: String, Sendable, CaseIterable {
  /// Sparsity-preserving LoRA with weight recompute and the reordered gradient (the default).
  case lors
  /// Plain dense LoRA (its merge fills the zeros; for comparison).
  case lora
  /// SQFT's masked LoRA, keeping the merged weight and the mask for backward (the memory baseline).
  case sqft
  /// SPP's row-block × column scaling of W.
  case spp
  /// LoSA: pruning and tuning together, per-layer sparsity and rank (LoSA.swift); its adapter is the masked
  /// low-rank delta of LoRS' layer, with a rank per block.
  case losa

  /// Whether merging keeps the base's zeros.
  public var preservesSparsity: Bool { self != .lora }
}

public enum ScaleRule: String, Sendable, CaseIterable {
  /// s = alpha / sqrt(r): rsLoRA, the LoRS default.
  case rslora
  /// s = alpha / r: the original LoRA.
  case lora

  public func scale(alpha: Double, rank: Int) -> Float {
    switch self {
    case .rslora: return Float(alpha / Double(rank).squareRoot())
    case .lora: return Float(alpha / Double(rank))
    }
  }
}

/// The seven projections of a Llama block, by their short names (the `--targets` vocabulary).
public enum ProjectionNames {
  public static let all = LlamaTensors.projections.map { String($0.split(separator: ".").last!) }
}

public final class AdapterSet {
  public let method: AdapterMethod
  /// The rank of every adapter, or with `layerRanks` the largest a block may have (LoSA's r_max).
  public let rank: Int
  /// LoSA: the rank of each block's adapters (nil: `rank` everywhere).
  public let layerRanks: [Int]?
  public let scale: Float
  public let params: ParamArena
  public let grads: ParamArena
  /// "model.layers.<l>.<self_attn|mlp>.<proj>" of every adapted projection, in model order.
  public let prefixes: [String]
  let workspace = AdapterWorkspace()
  /// Dropout on the adapter branch (lora and sqft only; see AdapterDropout).
  public var dropout: Float = 0
  /// The layers `attach` made, in prefix order.
  public private(set) var layers: [LinearLayer] = []

  /// Adapters on the projections whose short name (q_proj, …, down_proj) is in `targets`, zero-initialised;
  /// block l's of rank `layerRanks[l]` when given.
  public init(
    model: LlamaModel, method: AdapterMethod, rank: Int, scale: Float, targets: [String] = ProjectionNames.all, layerRanks: [Int]? = nil
  ) throws(SurgeryError) {
    if let layerRanks, layerRanks.count != model.config.layers || layerRanks.contains(where: { $0 < 1 }) {
      throw .invalidRequest("\(layerRanks.count) layer ranks for \(model.config.layers) layers (each must be >= 1)")
    }
    self.method = method
    self.rank = rank
    self.layerRanks = layerRanks
    self.scale = scale
    var tensors: [(String, [Int])] = []
    var prefixes: [String] = []
    for l in 0..<model.config.layers {
      for p in LlamaTensors.projections where targets.contains(String(p.split(separator: ".").last!)) {
        let prefix = "model.layers.\(l).\(p)"
        guard let shape = model.params.layout.entry(prefix + ".weight")?.shape else { continue }
        let (out, inp) = (shape[0], shape[1])
        // A factor of rank above min(out, in) adds parameters and no expressiveness: refuse it before
        // sizing the arena by it (a mistyped --rank would otherwise allocate out of all proportion).
        let r = layerRanks?[l] ?? rank
        if method != .spp && r > min(out, inp) {
          throw .invalidRequest("--rank \(r) exceeds the smaller dimension (\(min(out, inp))) of `\(prefix).weight` \(shape); choose a rank <= \(min(out, inp))")
        }
        if method == .spp && out % SPPLinear.rowBlocks != 0 {
          throw .shapeMismatch(name: prefix + ".weight", expected: [out / 16 * 16 + 16, inp], got: shape)
        }
        prefixes.append(prefix)
        for (name, shape) in Self.shapes(method, out: out, inp: inp, rank: layerRanks?[l] ?? rank) { tensors.append((prefix + name, shape)) }
      }
    }
    self.prefixes = prefixes
    let layout = ParamLayout(tensors)
    params = ParamArena(layout)
    grads = ParamArena(layout)
  }

  static func shapes(_ method: AdapterMethod, out: Int, inp: Int, rank: Int) -> [(String, [Int])] {
    switch method {
    case .lors, .losa: return [(".lora_A", [out, rank]), (".lora_B", [rank, inp])]
    case .lora, .sqft: return [(".lora_A", [rank, inp]), (".lora_B", [out, rank])]
    case .spp: return [(".lora_A", [SPPLinear.rowBlocks, inp]), (".lora_B", [out, 1])]
    }
  }

  /// The rank of one adapted projection.
  public func rank(of prefix: String) -> Int { layerRanks.map { $0[Self.position(of: prefix).0] } ?? rank }

  /// Whether the factors are in LoRS' naming (A (out, r), B (r, in)).
  var lorsNaming: Bool { method == .lors || method == .losa }

  /// The factor that multiplies the input (initialised randomly) and the one that starts at zero.
  var inputSideName: String { lorsNaming ? ".lora_B" : ".lora_A" }
  var zeroSideName: String { lorsNaming ? ".lora_A" : ".lora_B" }

  /// PEFT's usual initialisation: the input-side factor kaiming-uniform (a = √5, i.e. U(±1/√in)), the
  /// other zero, so ΔW = 0 at step 0. Seeded.
  public func initializeRandomly(seed: UInt64) {
    var random = SplitMix64(seed: seed)
    params.zero()
    for prefix in prefixes {
      let entry = params.layout.entry(prefix + inputSideName)!
      let bound = 1 / Float(entry.shape[1]).squareRoot()
      let p = params.base + entry.offset
      for i in 0..<entry.count { p[i] = (2 * random.nextUnitFloat() - 1) * bound }
    }
  }

  /// Replaces the targeted projections of `model` with this method's layers over these adapters.
  public func attach(to model: LlamaModel, gradient: LoRSGradient = .reordered) {
    layers = []
    defer { layers = prefixes.map { let (l, p) = Self.position(of: $0); return model.linears[l][p] } }
    for prefix in prefixes {
      let (l, p) = Self.position(of: prefix)
      let shape = model.params.layout.entry(prefix + ".weight")!.shape
      let weight = UnsafePointer(model.weight(prefix + ".weight"))
      let bias = model.params.pointer(prefix + ".bias").map { UnsafePointer($0) }
      let (a, b) = (params.pointer(prefix + ".lora_A")!, params.pointer(prefix + ".lora_B")!)
      let (gA, gB) = (grads.pointer(prefix + ".lora_A")!, grads.pointer(prefix + ".lora_B")!)
      let (out, inp) = (shape[0], shape[1])
      let factors = LowRankFactors(
        weight: weight, bias: bias, inFeatures: inp, outFeatures: out, rank: rank(of: prefix), scale: scale, a: a, b: b, gradA: gA, gradB: gB)
      switch method {
      case .lors, .losa:
        model.linears[l][p] = LoRSLinear(factors, gradient: gradient, workspace: workspace)
      case .lora:
        let layer = LoRALinear(factors)
        layer.dropout = AdapterDropout(probability: dropout)
        model.linears[l][p] = layer
      case .sqft:
        let layer = SQFTLinear(factors)
        layer.dropout = AdapterDropout(probability: dropout)
        model.linears[l][p] = layer
      case .spp:
        model.linears[l][p] = SPPLinear(
          weight: weight, bias: bias, inFeatures: inp, outFeatures: out, scale: scale, a: a, b: b, gradA: gA, gradB: gB,
          workspace: workspace)
      }
    }
  }

  /// A sort key putting prefixes in model order (layer, then q, k, v, o, gate, up, down).
  static func order(of prefix: String) -> (Int, Int) {
    let parts = prefix.split(separator: ".")
    guard parts.count >= 4, let l = Int(parts[2]) else { return (Int.max, 0) }
    return (l, LlamaTensors.projections.firstIndex(of: parts[3...].joined(separator: ".")) ?? Int.max)
  }

  /// (layer, index into LlamaTensors.projections) of a prefix this set made.
  static func position(of prefix: String) -> (Int, Int) {
    let parts = prefix.split(separator: ".")
    return (Int(parts[2])!, LlamaTensors.projections.firstIndex(of: parts[3...].joined(separator: "."))!)
  }

  /// The merged weight of one adapted projection, computed as `espalier merge` computes it. For the masked
  /// methods it has exactly the base's zeros; for lora, W + s·B·A (dense).
  public func mergedWeight(_ prefix: String, model: LlamaModel) throws(SurgeryError) -> [Float] {
    try model.prepare(block: Self.position(of: prefix).0)
    let shape = model.params.layout.entry(prefix + ".weight")!.shape
    let weight = Array(UnsafeBufferPointer(start: model.weight(prefix + ".weight"), count: shape[0] * shape[1]))
    func peft(_ suffix: String) -> [Float] {
      let name = peftNames.first { $0.peft == "base_model.model." + prefix + suffix }!.name
      let entry = params.layout.entry(name)!
      return Array(UnsafeBufferPointer(start: params.base + entry.offset, count: entry.count))
    }
    return Merge.mergedWeight(
      method: method, weight: weight, out: shape[0], inp: shape[1], a: peft(".lora_A.weight"), b: peft(".lora_B.weight"),
      rank: rank(of: prefix), scale: scale)
  }

  /// (PEFT name, arena name) for every tensor: PEFT's adapter_model.safetensors calls the input-side factor
  /// lora_A (r, in) and the output-side one lora_B (out, r), under "base_model.model.". LoRS' A (out, r) is
  /// therefore PEFT's lora_B and its B (r, in) PEFT's lora_A; SPP keeps its A (16, in) and b (out, 1) as
  /// lora_A and lora_B (PEFT itself cannot apply those).
  public var peftNames: [(peft: String, name: String)] {
    prefixes.flatMap { prefix -> [(peft: String, name: String)] in
      let peft = "base_model.model." + prefix
      switch method {
      case .lors, .losa: return [(peft + ".lora_A.weight", prefix + ".lora_B"), (peft + ".lora_B.weight", prefix + ".lora_A")]
      case .lora, .sqft, .spp: return [(peft + ".lora_A.weight", prefix + ".lora_A"), (peft + ".lora_B.weight", prefix + ".lora_B")]
      }
    }
  }

  public func zeroGrad() { grads.zero() }

  /// Draws new dropout masks: every attached layer gets its own seed derived from `seed`.
  public func reseedDropout(_ seed: UInt64) {
    guard dropout > 0 else { return }
    for (index, layer) in layers.enumerated() {
      var mixer = SplitMix64(seed: seed ^ (UInt64(index) &* 0xA24B_AED4_963E_E407))
      let layerSeed = mixer.next()
      (layer as? LoRALinear)?.dropout.seed = layerSeed
      (layer as? SQFTLinear)?.dropout.seed = layerSeed
    }
  }

  /// The global L2 norm of the gradients (Double accumulation).
  public var gradientNorm: Double {
    var sum = 0.0
    for i in 0..<grads.layout.totalCount { sum += Double(grads.base[i]) * Double(grads.base[i]) }
    return sum.squareRoot()
  }

  /// Scales gradients so their global norm is at most `maxNorm` (torch clip_grad_norm_); returns the
  /// norm before clipping.
  @discardableResult
  public func clipGradients(maxNorm: Double) -> Double {
    let norm = gradientNorm
    let coefficient = maxNorm / (norm + 1e-6)
    if coefficient < 1 { VectorMath.scale(grads.base, count: grads.layout.totalCount, by: Float(coefficient)) }
    return norm
  }
}

extension AdapterSet {
  /// A fingerprint of the base weights under the adapters (FNV-1a, 64-bit, over each adapted projection's
  /// name and f32 bit patterns, in model order), recorded in espalier.json so that merge can refuse a
  /// different base. Independent of the file format the base was read from.
  public func baseFingerprint(model: LlamaModel) throws(SurgeryError) -> String {
    var hasher = BaseFingerprint()
    for prefix in prefixes {
      try model.prepare(block: Self.position(of: prefix).0)
      let entry = model.params.layout.entry(prefix + ".weight")!
      hasher.add(prefix, UnsafeBufferPointer(start: model.weight(prefix + ".weight"), count: entry.count))
    }
    return hasher.value
  }
}

extension BaseFingerprint {
  /// The same hash over every tensor of `base` the adapter does not touch (embedding, norms, head, the
  /// projections it leaves alone), by name, each widened to f32 a chunk at a time (so a GGUF base and its
  /// conversion agree) and its mapped pages dropped every 16 MB, so the pass adds nothing to a run's
  /// resident memory. Recorded in espalier.json as base_fingerprint_others: merging into a base whose
  /// embedding or norms changed is refused, not silent.
  public static func others(_ base: any CheckpointReader, excluding prefixes: [String]) throws(FormatError) -> String {
    let adapted = Set(prefixes.map { $0 + ".weight" })
    var hasher = BaseFingerprint()
    for info in base.infos.sorted(by: { $0.name < $1.name }) where !adapted.contains(info.name) {
      let tensor = try base.tensor(info.name)
      for byte in info.name.utf8 { hasher.mix(UInt64(byte)) }
      for d in info.shape { hasher.mix(UInt64(truncatingIfNeeded: d)) }
      if tensor.dtype.convertsToFloat32 {
        let size = tensor.dtype.bits / 8, window = (16 << 20) / max(size, 1)
        try tensor.withUnsafeBytes { (bytes) throws(FormatError) in
          guard let start = bytes.baseAddress else { return }
          var done = 0
          while done < tensor.elementCount {
            let n = min(window, tensor.elementCount - done)
            try Float32Conversion.widenStreaming(tensor.dtype, from: start + done * size, count: n) { chunk in hasher.add("", chunk) }
            base.release(info.name, bytes: (done * size)..<((done + n) * size))
            done += n
          }
        }
      } else {
        tensor.withUnsafeBytes { bytes in for b in bytes { hasher.mix(UInt64(b)) } }
      }
      base.release(info.name)
    }
    return hasher.value
  }
}

/// FNV-1a (64-bit) over each adapted projection's prefix and the bit patterns of its f32 weights.
public struct BaseFingerprint {
  var hash: UInt64 = 0xCBF2_9CE4_8422_2325
  public init() {}
  mutating func mix(_ v: UInt64) { hash = (hash ^ v) &* 0x0000_0100_0000_01B3 }
  public mutating func add(_ prefix: String, _ weights: UnsafeBufferPointer<Float>) {
    for byte in prefix.utf8 { mix(UInt64(byte)) }
    for w in weights { mix(UInt64(w.bitPattern)) }
  }
  public var value: String { "fnv1a64:" + String(hash, radix: 16).leftPadded(to: 16) }
}

extension String {
  fileprivate func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

extension AdapterSet {
  /// Fills the adapters from a PEFT adapter_model.safetensors (names and shapes as `peftNames` writes them).
  public func load(peft file: SafetensorsFile) throws(SurgeryError) {
    var problems: [String] = []
    for (peft, name) in peftNames {
      let entry = params.layout.entry(name)!
      do {
        let tensor = try file.tensor(peft)
        guard tensor.shape == entry.shape else {
          problems.append("`\(peft)` has shape \(tensor.shape), expected \(entry.shape)")
          continue
        }
        let values = try tensor.float32()
        (params.base + entry.offset).update(from: values, count: entry.count)
      } catch {
        problems.append("\(error)")
      }
    }
    guard problems.isEmpty else { throw .checkpoint(path: file.path, problems: problems) }
  }
}
