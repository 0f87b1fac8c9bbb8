// The linear layers of the model, behind one interface so that adapter methods (LoRS, LoRA, SQFT, SPP)
// can replace a projection with their own forward and backward. The engine saves no state for them: in
// backward it hands each layer its (recomputed) input X again, as LoRS requires.

/// y (N, out) = x (N, in) · Wᵀ (+ b).
public protocol LinearLayer: AnyObject {
  var inFeatures: Int { get }
  var outFeatures: Int { get }
  /// out (N, outFeatures) = inp (N, inFeatures) · Wᵀ (+ bias).
  func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, N: Int)
  /// dinp (N, in) += dout (N, out) · W; the layer's own trainable parameters accumulate their gradients.
  func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, N: Int)
}

/// A plain projection over a weight held elsewhere (the parameter arena). Frozen unless given a
/// gradient buffer, in which case backward also accumulates dW = doutᵀ·inp (and db).
public final class DenseLinear: LinearLayer {
  public let inFeatures: Int
  public let outFeatures: Int
  /// (out, in), row-major, as HF stores it.
  public let weight: UnsafePointer<Float>
  public let bias: UnsafePointer<Float>?
  public var weightGrad: UnsafeMutablePointer<Float>?
  public var biasGrad: UnsafeMutablePointer<Float>?

  public init(weight: UnsafePointer<Float>, bias: UnsafePointer<Float>? = nil, inFeatures: Int, outFeatures: Int) {
    self.weight = weight
    self.bias = bias
    self.inFeatures = inFeatures
    self.outFeatures = outFeatures
  }

  public func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    // One token (decoding): y = W x.
    if N == 1 {
      Gemm.sgemv(out, weight, inp, rows: outFeatures, cols: inFeatures)
    } else {
      Gemm.sgemm(out, inp, weight, m: N, n: outFeatures, k: inFeatures, transB: true)
    }
    if let bias { for n in 0..<N { accumulate(out + n * outFeatures, bias, count: outFeatures) } }
  }

  public func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    // dinp (N, in) += dout (N, out) · W (out, in)
    Gemm.sgemm(dinp, dout, weight, m: N, n: inFeatures, k: outFeatures, beta: 1)
    if let weightGrad {
      // dW (out, in) += doutᵀ (out, N) · inp (N, in)
      Gemm.sgemm(weightGrad, dout, inp, m: outFeatures, n: inFeatures, k: N, transA: true, beta: 1)
    }
    if let biasGrad { for n in 0..<N { accumulate(biasGrad, dout + n * outFeatures, count: outFeatures) } }
  }
}

/// A layer whose effective weight W' is recomputed from frozen W and its adapter on every call, into a
/// workspace shared by all layers (LoRS, SPP): nothing but the input is kept between forward and backward.
protocol RecomputedWeightLayer: LinearLayer {
  var bias: UnsafePointer<Float>? { get }
  var workspace: AdapterWorkspace { get }
  /// W' (out, in) into `out`.
  func mergedWeight(into out: UnsafeMutablePointer<Float>)
}

extension RecomputedWeightLayer {
  /// y (N, out) = x (N, in) · W'ᵀ (+ bias).
  public func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, N: Int) {
    let merged = workspace.pointer(outFeatures * inFeatures)
    mergedWeight(into: merged)
    Gemm.sgemm(out, inp, merged, m: N, n: outFeatures, k: inFeatures, transB: true)
    if let bias { for n in 0..<N { accumulate(out + n * outFeatures, bias, count: outFeatures) } }
  }
}
