// AdamW (Loshchilov & Hutter; torch.optim.AdamW, foreach=False): decoupled weight decay, bias-corrected
// moments, one flat loop over a parameter arena and its gradient arena.
//   p ← p·(1 − lr·wd);  m ← m + (1−β1)·(g − m);  v ← β2·v + (1−β2)·g²
//   p ← p − (lr / (1−β1ᵗ)) · m / (sqrt(v) / sqrt(1−β2ᵗ) + eps)

public final class AdamW {
  public var beta1: Float = 0.9
  public var beta2: Float = 0.999
  public var eps: Float = 1e-8
  public var weightDecay: Float = 0
  /// Steps taken (t in the bias corrections).
  public private(set) var step = 0
  /// First and second moments, laid out like the parameters.
  public private(set) var m: [Float]
  public private(set) var v: [Float]

  public init(count: Int, weightDecay: Float = 0) {
    m = [Float](repeating: 0, count: count)
    v = [Float](repeating: 0, count: count)
    self.weightDecay = weightDecay
  }

  /// Restores state saved from a checkpoint.
  public init(step: Int, m: [Float], v: [Float], weightDecay: Float) {
    self.step = step
    self.m = m
    self.v = v
    self.weightDecay = weightDecay
  }

  /// One step with learning rate `lr`. Mirrors torch's single-tensor AdamW op for op: the first moment
  /// as a lerp towards g, bias corrections in double precision, denominator sqrt(v)/sqrt(bc2) + eps.
  public func update(_ params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>, count: Int, lr: Double) {
    step += 1
    let bc1 = 1 - pow(Double(beta1), Double(step)), bc2 = 1 - pow(Double(beta2), Double(step))
    let stepSize = Float(lr / bc1), bc2Root = Float(bc2.squareRoot())
    let decay = Float(1 - lr * Double(weightDecay))
    let (w1, b2, e) = (1 - beta1, beta2, eps)
    m.withUnsafeMutableBufferPointer { mp in
      v.withUnsafeMutableBufferPointer { vp in
        for i in 0..<count {
          let g = grads[i]
          params[i] *= decay
          mp[i] += w1 * (g - mp[i])
          vp[i] = vp[i] * b2 + g * g * (1 - b2)
          params[i] -= stepSize * (mp[i] / (vp[i].squareRoot() / bc2Root + e))
        }
      }
    }
  }
}

import Foundation
