// Dropout on an adapter's input branch, as PEFT applies it to LoRA (y = base(x) + drop(x)·ΔWᵀ) and SQFT's
// SparsePEFT to its masked delta. Inverted dropout: kept inputs are scaled by 1/(1 − p). The keep mask is
// never stored: it is a pure function of (seed, element index), so backward regenerates exactly the mask
// forward used, and a resumed run draws the same masks (the seed comes from the run seed, step and
// micro-batch). LoRS and SPP merge their adapter into the weight before the product, so there is no
// separate branch to drop and they take no dropout.
//
// The mask is counter-based: element i is dropped when a 16-bit keyed hash of i (a four-round Feistel
// network over the index, keyed by the seed) is below p·2¹⁶. Unlike a sequential generator it evaluates
// sixteen elements at once in SIMD lanes. (A sequential SplitMix64 stream made LoRA's dropout cost 30% of
// a SmolLM2 training step; see bench/NOTES.md.)

public struct AdapterDropout: Sendable {
  public var probability: Float
  /// Set before every forward (per micro-batch and layer) by the trainer.
  public var seed: UInt64 = 0

  public init(probability: Float) { self.probability = probability }

  public var isActive: Bool { probability > 0 }

  /// 1/(1 − p) or 0 for each of 16 consecutive elements from `start` (a multiple of 16), as two halves.
  /// Each element's 16-bit hash is four Feistel rounds over its 32-bit index, keyed by the seed's four 16-bit
  /// parts; it is dropped when the hash is below p·2¹⁶ (so p is applied to within 2⁻¹⁷). 16-bit lanes keep
  /// the multiplies native on baseline x86-64 (SSE2 has no 32-bit lane multiply).
  @inline(__always)
  func factors(at start: Int, _ c: Constants) -> (SIMD8<Float>, SIMD8<Float>) {
    typealias Half = SIMD16<UInt16>
    var left = Half(repeating: UInt16(truncatingIfNeeded: start >> 16))
    var right = Half(repeating: UInt16(truncatingIfNeeded: start)) &+ Half(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    @inline(__always) func round(_ key: Half) {
      var x = right ^ key
      x &*= Half(repeating: 0x9E37)
      x ^= x &>> Half(repeating: 7)
      x &*= Half(repeating: 0x6A09)
      x ^= x &>> Half(repeating: 8)
      (left, right) = (right, left ^ x)
    }
    round(c.key0)
    round(c.key1)
    round(c.key2)
    round(c.key3)
    // Elements start..<start+8 take the low halves of the eight 32-bit words, the next eight the high halves.
    let words = unsafeBitCast(right, to: SIMD8<Int32>.self)
    let low = words & SIMD8<Int32>(repeating: 0xFFFF)
    let high = (words &>> SIMD8<Int32>(repeating: 16)) & SIMD8<Int32>(repeating: 0xFFFF)
    let zero = SIMD8<Float>(repeating: 0)
    return (c.keep.replacing(with: zero, where: low .< c.threshold), c.keep.replacing(with: zero, where: high .< c.threshold))
  }

  struct Constants {
    let keep: SIMD8<Float>
    let threshold: SIMD8<Int32>
    let key0, key1, key2, key3: SIMD16<UInt16>
  }

  func constants(blockHigh: Int) -> Constants {
    func key(_ shift: UInt64, _ extra: Int = 0) -> SIMD16<UInt16> {
      SIMD16(repeating: UInt16(truncatingIfNeeded: seed >> shift) ^ UInt16(truncatingIfNeeded: extra))
    }
    return Constants(
      keep: SIMD8(repeating: 1 / (1 - probability)),
      threshold: SIMD8(repeating: Int32(min((Double(probability) * 65536).rounded(), 65536))),
      key0: key(0, blockHigh), key1: key(16, blockHigh >> 16), key2: key(32), key3: key(48))
  }

  /// Runs `body(i, f)` for each block of 16 elements from 0 (the last block may reach past `count`).
  @inline(__always)
  func forEachBlock(count: Int, _ body: (Int, (SIMD8<Float>, SIMD8<Float>)) -> Void) {
    var i = 0
    while i < count {
      // Indices past 2³² fold their high bits into the keys.
      let c = constants(blockHigh: i >> 32)
      let end = min(count, (i >> 32 + 1) << 32)
      while i < end {
        body(i, factors(at: i, c))
        i += 16
      }
    }
  }

  /// out (count) = inp · keep / (1 − p), keep ~ Bernoulli(1 − p) from (seed, index). `out` may be `inp`.
  public func apply(_ inp: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
    forEachBlock(count: count) { i, f in
      if i + 16 <= count {
        let v0 = UnsafeRawPointer(inp + i).loadUnaligned(as: SIMD8<Float>.self)
        let v1 = UnsafeRawPointer(inp + i + 8).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(out + i).storeBytes(of: v0 * f.0, as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(out + i + 8).storeBytes(of: v1 * f.1, as: SIMD8<Float>.self)
      } else {
        for j in i..<count { out[j] = inp[j] * (j - i < 8 ? f.0[j - i] : f.1[j - i - 8]) }
      }
    }
  }

  /// acc (count) += grad · keep / (1 − p): the backward of `apply`, added to an existing gradient.
  public func accumulateBackward(_ grad: UnsafePointer<Float>, into acc: UnsafeMutablePointer<Float>, count: Int) {
    forEachBlock(count: count) { i, f in
      if i + 16 <= count {
        let g0 = UnsafeRawPointer(grad + i).loadUnaligned(as: SIMD8<Float>.self)
        let g1 = UnsafeRawPointer(grad + i + 8).loadUnaligned(as: SIMD8<Float>.self)
        let a0 = UnsafeRawPointer(acc + i).loadUnaligned(as: SIMD8<Float>.self)
        let a1 = UnsafeRawPointer(acc + i + 8).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(acc + i).storeBytes(of: a0 + g0 * f.0, as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(acc + i + 8).storeBytes(of: a1 + g1 * f.1, as: SIMD8<Float>.self)
      } else {
        for j in i..<count { acc[j] += grad[j] * (j - i < 8 ? f.0[j - i] : f.1[j - i - 8]) }
      }
    }
  }
}
