// A frozen weight with two trainable low-rank factors and their gradients: what every low-rank adapter
// layer (LoRS, LoRA, SQFT) holds. The factors are in the method's own naming and shapes: the baselines use
// PEFT's (a = lora_A (r, in), b = lora_B (out, r), ΔW = s·b·a), LoRS its paper's (a (out, r), b (r, in),
// ΔW = s·a·b); AdapterSet lays them out and peftNames maps them to PEFT's tensor names.

public struct LowRankFactors {
  public let inFeatures: Int
  public let outFeatures: Int
  public let rank: Int
  public let scale: Float
  /// Frozen weight (out, in) and optional bias (out).
  let weight: UnsafePointer<Float>
  let bias: UnsafePointer<Float>?
  public let a: UnsafeMutablePointer<Float>
  public let b: UnsafeMutablePointer<Float>
  public let gradA: UnsafeMutablePointer<Float>
  public let gradB: UnsafeMutablePointer<Float>

  public init(
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, inFeatures: Int, outFeatures: Int, rank: Int, scale: Float,
    a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>, gradA: UnsafeMutablePointer<Float>, gradB: UnsafeMutablePointer<Float>
  ) {
    (self.weight, self.bias, self.inFeatures, self.outFeatures, self.rank, self.scale) = (weight, bias, inFeatures, outFeatures, rank, scale)
    (self.a, self.b, self.gradA, self.gradB) = (a, b, gradA, gradB)
  }
}
