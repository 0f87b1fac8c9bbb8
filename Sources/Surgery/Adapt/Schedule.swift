// Learning-rate schedule: linear warmup from 0, then cosine decay to a floor (LoRS' recipe: 2e-5 down to
// 1e-6; HF get_cosine_with_min_lr_schedule_with_warmup):
//   t < warmup:  lr = base · t / warmup
//   otherwise:   lr = min + (base − min) · ½ · (1 + cos(π · (t − warmup) / (total − warmup)))

import Foundation

public struct CosineSchedule: Sendable, Equatable {
  public var base: Double
  public var floor: Double
  public var warmup: Int
  public var total: Int

  public init(base: Double, floor: Double = 0, warmup: Int = 0, total: Int) {
    self.base = base
    self.floor = floor
    self.warmup = warmup
    self.total = total
  }

  public func rate(at step: Int) -> Double {
    if step < warmup { return base * Double(step) / Double(max(1, warmup)) }
    let progress = min(1, Double(step - warmup) / Double(max(1, total - warmup)))
    return floor + (base - floor) * 0.5 * (1 + cos(Double.pi * progress))
  }
}
