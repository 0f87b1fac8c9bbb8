// LoSA's small decisions (wzhuang-xmu/LoSA, ICLR 2025; algorithms.md §6), each a pure function:
//
//   schedule   S_t = S − S·(1 − t/T)³ for t = 1…T (T = 5: 0.488, 0.784, 0.936, 0.992, 1 of S)
//   band       δ(S_t) = 0.01 (S_t ≤ 0.5), 0.02 (≤ 0.6), 0.03 (≤ 0.7); the reference leaves δ undefined above
//              0.7 (it keeps the last value it set), so above 0.7 the 0.03 band continues
//   rates      min Σ_l x_l·imp_l  s.t.  mean(x) = S_t,  S_t − δ ≤ x_l ≤ S_t + δ
//              The reference hands this to SLSQP. It is a linear programme with one equality and box bounds
//              (a fractional knapsack), so its exact solution is greedy: start every layer at the lower
//              bound and give the remaining L·δ, up to 2δ each, to the least important layers first. With
//              distinct importances that is S_t + δ for the ⌊L/2⌋ least important, S_t − δ for the ⌊L/2⌋
//              most important and S_t for the median. Only the order of the importances matters, so the
//              reference's β (1 in its Wanda path, 100 in its SparseGPT path) changes nothing.
//   row zeros  Wanda prunes a whole number of weights per row: for each projection width C the per-layer
//              counts k_l ≈ C·x_l are apportioned (largest remainder) so that Σ_l k_l = L·⌊C·S_t⌋, the
//              count uniform Wanda at S_t prunes, and no layer drops below its count of the iteration
//              before (zeros do not grow back; the reference lets such a layer keep them, overshooting S).
//              LoSA's model therefore has exactly the zeros of a uniform Wanda model at the same target.
//   ranks      r_l = round(loss_l / Σ loss · m · L), clipped to [1, r_max], then moved one at a time toward
//              the budget m·L: surplus taken from the smallest losses, deficit given to the largest. The
//              reference makes one pass of ±1 and may stop short of the budget; this keeps going until it
//              is met exactly (or every layer sits at a bound).

import Foundation

public enum LoSAAllocation {
  /// The target sparsity of iteration t (1-based) of T.
  public static func target(iteration t: Int, of T: Int, final S: Double) -> Double {
    let remaining = 1 - Double(t) / Double(T)
    return S - S * remaining * remaining * remaining
  }

  /// The half-width of the per-layer band around S_t.
  public static func delta(_ target: Double) -> Double {
    if target <= 0.5 { return 0.01 }
    if target <= 0.6 { return 0.02 }
    return 0.03
  }

  /// The exact minimiser of Σ x_l·importance_l with mean(x) = target and |x_l − target| ≤ delta (bounds
  /// kept inside [0, 1]). Ties in importance go to the lower layer first.
  public static func rates(importance: [Double], target: Double, delta: Double) -> [Double] {
    let L = importance.count
    guard L > 0 else { return [] }
    let low = max(0, target - delta), high = min(1, target + delta)
    var x = [Double](repeating: low, count: L)
    var budget = Double(L) * target - Double(L) * low
    // Cheapest first: the least important layers take the most sparsity.
    let order = importance.indices.sorted { importance[$0] < importance[$1] || (importance[$0] == importance[$1] && $0 < $1) }
    for l in order where budget > 0 {
      let step = min(high - low, budget)
      x[l] = low + step
      budget -= step
    }
    return x
  }

  /// Whole numbers of zeros per row for each layer, close to width·rates[l], summing to
  /// rates.count · ⌊width · target⌋, each in [atLeast[l], width]: pruned weights cannot grow back, so a
  /// layer never goes below the zeros an earlier iteration gave it (the total still fits: S_t grows).
  /// Units are added where width·rate exceeds the count most and taken where it falls short most
  /// (ties: the lower layer).
  public static func rowZeros(rates: [Double], width: Int, target: Double, atLeast: [Int]? = nil) -> [Int] {
    let L = rates.count
    let total = L * Int((Double(width) * target).rounded(.down))
    let floors = atLeast ?? [Int](repeating: 0, count: L)
    let exact = rates.map { min(Double(width), max(0, Double(width) * $0)) }
    var k = (0..<L).map { min(width, max(floors[$0], Int(exact[$0].rounded(.down)))) }
    var missing = total - k.reduce(0, +)
    while missing != 0 {
      var pick = -1
      for l in 0..<L {
        if missing > 0 ? k[l] >= width : k[l] <= floors[l] { continue }
        let shortfall = exact[l] - Double(k[l])
        if pick < 0 { pick = l; continue }
        let best = exact[pick] - Double(k[pick])
        if missing > 0 ? shortfall > best : shortfall < best { pick = l }
      }
      guard pick >= 0 else { break }  // every layer at a bound
      k[pick] += missing > 0 ? 1 : -1
      missing += missing > 0 ? -1 : 1
    }
    return k
  }

  /// Per-layer ranks in proportion to the reconstruction losses, averaging `meanRank`, in [1, maxRank].
  public static func ranks(losses: [Double], meanRank: Int, maxRank: Int) -> [Int] {
    let L = losses.count
    guard L > 0 else { return [] }
    let budget = meanRank * L
    let total = losses.reduce(0, +)
    var r = losses.map { loss -> Int in
      let share = total > 0 && total.isFinite ? loss / total * Double(budget) : Double(meanRank)
      return min(maxRank, max(1, Int(share.rounded(.toNearestOrEven))))
    }
    // Ascending loss (stable), as the reference's argsort.
    let ascending = losses.indices.sorted { losses[$0] < losses[$1] || (losses[$0] == losses[$1] && $0 < $1) }
    var diff = r.reduce(0, +) - budget
    while diff != 0 {
      let before = diff
      if diff > 0 {
        for l in ascending where diff > 0 && r[l] > 1 { r[l] -= 1; diff -= 1 }
      } else {
        for l in ascending.reversed() where diff < 0 && r[l] < maxRank { r[l] += 1; diff += 1 }
      }
      if diff == before { break }  // every layer at a bound: the budget cannot be met
    }
    return r
  }
}
