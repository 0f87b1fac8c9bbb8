// A seeded random number generator whose whole state is one UInt64 (SplitMix64, Steele et al. 2014),
// so a training checkpoint can save it and a resumed run continue the same stream.

public struct SplitMix64: RandomNumberGenerator, Sendable, Equatable {
  public var state: UInt64

  public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
  public init(state: UInt64) { self.state = state }

  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// Uniform in [0, 1) with 24 bits.
  public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * 0x1p-24 }
}
