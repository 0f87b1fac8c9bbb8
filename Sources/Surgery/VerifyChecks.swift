// The per-tensor checks of Verifier, on the stored bits: one pass counts zeros, non-finite values and
// the zero-set differences against the base; untouched tensors compare byte for byte; adapted weights
// compare with the merged f32 value within half an ulp of the storage dtype.

import Formats

#if canImport(Glibc)
  import Glibc
#endif

extension Verifier {
  static func checkTensor(
    _ info: TensorInfo, _ model: any CheckpointReader, _ base: (any CheckpointReader)?, _ baseInfo: TensorInfo?,
    _ plan: MergePlan?, _ options: VerifyOptions
  ) -> TensorVerdict {
    var v = TensorVerdict(info: info, file: model.file(of: info.name), projection: isProjection(info))
    defer {
      model.release(info.name)
      if baseInfo != nil { base?.release(info.name) }
    }
    let tensor: Tensor
    do { tensor = try model.tensor(info.name) } catch {
      v.checks.record("readable", "unreadable: \(error)")
      return v
    }
    v.checks.record("readable")
    var reference: Tensor?
    if let base, let baseInfo {
      // A GGUF is compared with the base as it would store it (same type, same rounding), so its dtype
      // may differ from the base's and its other tensors must still equal the base's bit for bit.
      let gguf = model as? GGUFCheckpoint
      let storedByGGUF = gguf != nil && baseInfo.dtype.isFloatingPoint && info.dtype.isFloatingPoint
      let check = storedByGGUF ? "same shape as the base" : "same dtype and shape as the base"
      if (!storedByGGUF && baseInfo.dtype != info.dtype) || baseInfo.shape != info.shape {
        v.checks.record(check, "is \(info.dtype) \(info.shape), the base has \(baseInfo.dtype) \(baseInfo.shape)")
      } else {
        do {
          let b = try base.tensor(info.name)
          if let gguf, storedByGGUF {
            if let stored = try gguf.asStored(b) {
              reference = stored
            } else if b.dtype == info.dtype {
              reference = b  // a type we do not write (llama.cpp's K-quants): compared as read
            } else {
              v.checks.record(check, "stored as a GGUF type we do not encode, so it cannot be compared with the base's \(b.dtype)")
            }
          } else {
            reference = b
          }
        } catch { v.checks.record(check, "the base's copy is unreadable: \(error)") }
        v.checks.record(check)
      }
    }
    let scan = BitScan.scan(tensor, reference)
    v.nonfinite = scan.nonfinite
    if !options.allowNonfinite { v.checks.record("finite", scan.nonfinite > 0 ? "\(scan.nonfinite) NaN/Inf values" : nil) }
    v.sparsity = scan.zeros.map { SparsityStats(elements: tensor.elementCount, zeros: $0) }
    if v.projection, let pattern = options.pattern {
      v.pattern = Sparsity.check(tensor, pattern: pattern)
      if let p = v.pattern {
        v.checks.record(
          "pattern \(pattern)",
          p.conforms ? nil : p.shapeFits ? "\(p.violations) of \(p.groups) groups break \(pattern)" : "columns do not divide into groups of \(pattern.m)")
      }
    }
    guard let reference else { return v }
    let adapted = info.name.hasSuffix(".weight") && plan?.factors[String(info.name.dropLast(".weight".count))] != nil
    if v.projection || adapted {
      v.zerosFilled = scan.filled
      v.newZeros = scan.newZeros
      if let f = scan.filled { v.checks.record("the base's zeros kept", f > 0 ? "\(f) of the base's zeros filled" : nil) }
      if let n = scan.newZeros, !options.allowNewZeros {
        v.checks.record("no new zeros", n > 0 ? "\(n) new zeros (the base has values there)" : nil)
      }
    }
    if adapted, let plan {
      checkAdapted(tensor, reference, plan, &v)
    } else if plan != nil || !v.projection {
      let same = tensor.withUnsafeBytes { a in reference.withUnsafeBytes { b in a.count == b.count && (a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0) } }
      v.identical = same
      v.checks.record(
        "unchanged from the base", same ? nil : plan != nil ? "changed, but the adapter does not touch it" : "changed, but only projection weights may change")
    }
    return v
  }

  /// MODEL = BASE merged with the adapter, within half an ulp of the storage dtype; a kept weight whose
  /// merged value rounds to zero may hold the smallest normal of its sign instead (what merge writes).
  static func checkAdapted(_ tensor: Tensor, _ reference: Tensor, _ plan: MergePlan, _ v: inout TensorVerdict) {
    let mergeCheck = "equals base + adapter"
    let merged: [Float], stored: [Float], w: [Float]
    do {
      w = try reference.float32()
      guard let m = try plan.merged(tensor.info, base: w) else { return }
      merged = m
      stored = try tensor.float32()
    } catch {
      v.checks.record(mergeCheck, "cannot recompute the merge: \(error)")
      return
    }
    let format = FloatFormat(tensor.dtype)
    let tiny = Merge.smallestNormal(tensor.dtype)
    var (mismatches, worst) = (0, 0.0)
    for k in merged.indices {
      let (m, x) = (stored[k], merged[k])
      if m == x { continue }
      let half = format.ulp(max(abs(m), abs(x))) / 2
      let error = Double(abs(m - x))
      if w[k] != 0 && abs(m) == tiny && abs(x) < tiny { continue }  // raised by merge, not lost
      worst = max(worst, error / Double(half * 2))
      if !(error <= Double(half)) { mismatches += 1 }
    }
    v.adapterMismatches = mismatches
    v.adapterMaxUlps = worst
    v.checks.record(
      mergeCheck, mismatches > 0 ? "\(mismatches) values differ from base + adapter by more than half an ulp of \(tensor.dtype) (worst \(worst) ulp)" : nil)
  }
}

/// The spacing of a float storage dtype (DType.floatFormat); f64 and anything else compare in f32.
struct FloatFormat {
  var mantissa: Int
  var minExponent: Int
  init(_ dtype: DType) {
    let format = dtype == .f64 ? nil : dtype.floatFormat
    (mantissa, minExponent) = format ?? DType.f32.floatFormat!
  }
  /// The ulp at magnitude `x` (subnormals share the smallest normal's spacing).
  func ulp(_ x: Float) -> Float {
    let e = x == 0 || !x.isFinite ? minExponent : max(Int(x.exponent), minExponent)
    return Float(sign: .plus, exponent: e - mantissa, significand: 1)
  }
}

/// One pass over a tensor's stored words (and its base's): zeros, NaN/Inf, and zero-set differences.
enum BitScan {
  struct Result {
    var zeros: Int?
    var nonfinite = 0
    var filled: Int?
    var newZeros: Int?
  }

  static func scan(_ t: Tensor, _ base: Tensor?) -> Result {
    guard let word = Sparsity.zeroWord(t.dtype) else { return Result() }
    let n = t.elementCount
    return t.withUnsafeBytes { a in
      (base ?? t).withUnsafeBytes { b in
        let other = base == nil ? nil : b.baseAddress
        // A non-finite value has every bit of DType.nonFiniteMask set; value 1 outside mask 0 never matches.
        let nf = t.dtype.nonFiniteMask
        switch word {
        case .u8(let z): return count(a.baseAddress, other, n, zero: z, nfMask: UInt8(nf ?? 0), nfValue: UInt8(nf ?? 1))
        case .u16(let z): return count(a.baseAddress, other, n, zero: z, nfMask: UInt16(nf ?? 0), nfValue: UInt16(nf ?? 1))
        case .u32(let z): return count(a.baseAddress, other, n, zero: z, nfMask: UInt32(nf ?? 0), nfValue: UInt32(nf ?? 1))
        case .u64(let z): return count(a.baseAddress, other, n, zero: z, nfMask: nf ?? 0, nfValue: nf ?? 1)
        case .noZero: return Result(zeros: 0)
        }
      }
    }
  }

  /// Branch-free counts; `nfValue` outside `nfMask` disables the non-finite test.
  static func count<T: FixedWidthInteger>(
    _ a: UnsafeRawPointer?, _ b: UnsafeRawPointer?, _ n: Int, zero: T, nfMask: T, nfValue: T
  ) -> Result {
    guard let a, n > 0 else { return Result(zeros: 0, filled: b == nil ? nil : 0, newZeros: b == nil ? nil : 0) }
    let x = a.assumingMemoryBound(to: T.self)
    var (zeros, nonfinite, filled, newZeros) = (0, 0, 0, 0)
    if let b {
      let y = b.assumingMemoryBound(to: T.self)
      for i in 0..<n {
        let mz = x[i] & zero == 0 ? 1 : 0, bz = y[i] & zero == 0 ? 1 : 0
        zeros &+= mz
        nonfinite &+= x[i] & nfMask == nfValue ? 1 : 0
        filled &+= bz & (1 &- mz)
        newZeros &+= mz & (1 &- bz)
      }
      return Result(zeros: zeros, nonfinite: nonfinite, filled: filled, newZeros: newZeros)
    }
    for i in 0..<n {
      zeros &+= x[i] & zero == 0 ? 1 : 0
      nonfinite &+= x[i] & nfMask == nfValue ? 1 : 0
    }
    return Result(zeros: zeros, nonfinite: nonfinite)
  }
}
