// The trainable adapters of a model: every factor in one arena laid out by a ParamLayout, gradients in a
// second arena with the same layout (so the optimizer is one flat loop), attached to the model by
// replacing its projections with adapter layers.

import Formats

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

public final class LoRSAdapters {
  public let rank: Int
  public let scale: Float
  /// "<projection prefix>.lora_A" (out, r) and ".lora_B" (r, in), LoRS naming.
  public let params: ParamArena
  public let grads: ParamArena
  public let prefixes: [String]
  let workspace = LoRSWorkspace()

  /// Adapters for the given projections (default: all seven of every block), zero-initialised.
  public init(model: LlamaModel, rank: Int, scale: Float, targets: (String) -> Bool = { _ in true }) {
    self.rank = rank
    self.scale = scale
    var tensors: [(String, [Int])] = []
    var prefixes: [String] = []
    for l in 0..<model.config.layers {
      for p in LlamaTensors.projections {
        let prefix = "model.layers.\(l).\(p)"
        guard targets(prefix), let shape = model.params.layout.entry(prefix + ".weight")?.shape else { continue }
        prefixes.append(prefix)
        tensors.append((prefix + ".lora_A", [shape[0], rank]))
        tensors.append((prefix + ".lora_B", [rank, shape[1]]))
      }
    }
    self.prefixes = prefixes
    let layout = ParamLayout(tensors)
    params = ParamArena(layout)
    grads = ParamArena(layout)
  }

  /// Replaces the targeted projections of `model` with LoRS layers over these adapters.
  public func attach(to model: LlamaModel, gradient: LoRSGradient) {
    for prefix in prefixes {
      let parts = prefix.split(separator: ".")
      guard let l = Int(parts[2]), let p = LlamaTensors.projections.firstIndex(of: parts[3...].joined(separator: ".")) else { continue }
      let shape = model.params.layout.entry(prefix + ".weight")!.shape
      model.linears[l][p] = LoRSLinear(
        weight: model.weight(prefix + ".weight"), bias: model.params.pointer(prefix + ".bias").map { UnsafePointer($0) },
        inFeatures: shape[1], outFeatures: shape[0], rank: rank, scale: scale,
        a: params.pointer(prefix + ".lora_A")!, b: params.pointer(prefix + ".lora_B")!,
        gradA: grads.pointer(prefix + ".lora_A")!, gradB: grads.pointer(prefix + ".lora_B")!,
        gradient: gradient, workspace: workspace)
    }
  }

  public func zeroGrad() { grads.zero() }

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
