// Dropout on an adapter's input branch, as PEFT applies it to LoRA (y = base(x) + drop(x)·ΔWᵀ) and SQFT's
// SparsePEFT to its masked delta. Inverted dropout: kept inputs are scaled by 1/(1 − p). The keep mask is
// never stored: it is a pure function of (seed, element index), so backward regenerates exactly the mask
// forward used, and a resumed run draws the same masks (the seed comes from the run seed, step and
// micro-batch). LoRS and SPP merge their adapter into the weight before the product, so there is no
// separate branch to drop and they take no dropout.

public struct AdapterDropout: Sendable {
  public var probability: Float
  /// Set before every forward (per micro-batch and layer) by the trainer.
  public var seed: UInt64 = 0

  public init(probability: Float) { self.probability = probability }

  public var isActive: Bool { probability > 0 }

  /// out (count) = inp · keep / (1 − p), keep ~ Bernoulli(1 − p) from (seed, index).
  public func apply(_ inp: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
    let keepScale = 1 / (1 - probability)
    let threshold = UInt32(Double(probability) * 4_294_967_296.0)
    var random = SplitMix64(seed: seed)
    var i = 0
    while i < count {
      // Two 32-bit draws per 64-bit output.
      let bits = random.next()
      out[i] = UInt32(truncatingIfNeeded: bits) < threshold ? 0 : inp[i] * keepScale
      if i + 1 < count { out[i + 1] = UInt32(truncatingIfNeeded: bits >> 32) < threshold ? 0 : inp[i + 1] * keepScale }
      i += 2
    }
  }
}
