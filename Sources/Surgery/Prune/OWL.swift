// OWL, outlier-weighted layerwise sparsity (Yin et al. 2024, luuyin/OWL `prune_wanda_outlier`;
// algorithms.md §6b). Blocks whose Wanda scores hold more outliers keep more weights:
//
// - Pass 1, on the dense model: the calibration windows run through the *dense* blocks. For block l, A_l
//   is the Wanda scores |W_ij|·‖X_j‖₂ of all its pruned projections together, and its outlier ratio is
//   D_l = 100 · mean(A_l > M · mean(A_l)).
// - Rates: r = (D − min D)/(max D − min D) · 2λ, r ← r − mean(r) + (1 − S) is the fraction block l keeps,
//   so its sparsity is 1 − r_l: the rates lie within a 2λ band around S and average exactly to S.
// - Pass 2 is ordinary pruning with block l at its rate (PruneOptions.layerSparsity).
//
// The rates go to a JSON file beside the output (`layer_sparsity.json`) that `--layer-sparsity` replays;
// that option also reads LoSA's losa.json (its last iteration's rates).

import Formats

public struct OWLSettings: Sendable, Equatable {
  /// The outlier threshold M, as a multiple of the block's mean score (OWL's Hyper_m).
  public var m = 5.0
  /// The half-width λ of the band of rates around the target (OWL's Lamda).
  public var lambda = 0.08
  public init() {}
}

/// The per-block sparsities of a layerwise profile, and where they came from.
public struct LayerSparsity: Sendable, Equatable {
  /// Sparsity (fraction of zeros) of each block's projections.
  public var rates: [Double]
  /// OWL's outlier ratios D_l (percent), when the profile is OWL's.
  public var outlierRatios: [Double]?
  public var profile: String
  public var target: Double
  public var settings: OWLSettings?

  public init(rates: [Double], profile: String, target: Double, outlierRatios: [Double]? = nil, settings: OWLSettings? = nil) {
    (self.rates, self.profile, self.target, self.outlierRatios, self.settings) = (rates, profile, target, outlierRatios, settings)
  }

  public static let fileName = "layer_sparsity.json"

  public var json: JSONValue {
    func numbers(_ values: [Double]) -> JSONValue { .array(values.map { .number(String($0)) }) }
    var object = JSONObject([("profile", .string(profile)), ("target_sparsity", .number(String(target)))])
    if let settings {
      object["owl_m"] = .number(String(settings.m))
      object["owl_lambda"] = .number(String(settings.lambda))
    }
    if let outlierRatios { object["outlier_ratios"] = numbers(outlierRatios) }
    object["mean_sparsity"] = .number(String(rates.reduce(0, +) / Double(max(1, rates.count))))
    object["rates"] = numbers(rates)
    return .object(object)
  }

  /// Reads a rates file: an object with `rates` (one sparsity per block: this file, or any tool's), or
  /// LoSA's losa.json (the rates of its last iteration). `layers` is the model's block count.
  public static func read(_ path: String, layers: Int) throws(SurgeryError) -> LayerSparsity {
    func bad(_ why: String) -> SurgeryError { .invalidRequest("\(path): \(why)") }
    let object: JSONObject
    do { object = try JSONFile.object(path) } catch { throw .format(error) }
    var rates = object["rates"]
    var profile = object["profile"]?.stringValue ?? "file"
    if rates == nil, let last = object["per_iteration"]?.arrayValue?.last?.objectValue {
      (rates, profile) = (last["rates"], "losa")
    }
    guard let list = rates?.arrayValue else { throw bad("no \"rates\" array (nor LoSA's per_iteration[].rates)") }
    let values = list.map(\.doubleValue)
    guard values.allSatisfy({ $0 != nil }) else { throw bad("\"rates\" must hold numbers") }
    let parsed = values.map { $0! }
    guard parsed.count == layers else { throw bad("\(parsed.count) rates for a model of \(layers) blocks") }
    if let i = parsed.firstIndex(where: { !($0 >= 0 && $0 < 1) }) {
      throw bad("rate \(parsed[i]) of block \(i) is not a sparsity in [0, 1)")
    }
    let target = object["target_sparsity"]?.doubleValue ?? parsed.reduce(0, +) / Double(layers)
    return LayerSparsity(rates: parsed, profile: profile, target: target)
  }
}

public enum OWL {
  /// OWL's rates: block l's sparsity from the outlier ratios D, target S and λ. All equal to S when the
  /// ratios are (no spread to scale). As OWL does, a rate at or below 0 becomes 0.01; a rate that would
  /// reach 1 (S + λ too close to 1) is refused.
  public static func rates(outlierRatios d: [Double], target: Double, lambda: Double) throws(SurgeryError) -> [Double] {
    guard let low = d.min(), let high = d.max(), high > low else { return d.map { _ in target } }
    let spread = d.map { ($0 - low) / (high - low) * 2 * lambda }
    let mean = spread.reduce(0, +) / Double(spread.count)
    let rates = spread.map { 1 - ($0 - mean + (1 - target)) }.map { $0 <= 0 ? 0.01 : $0 }
    if let top = rates.max(), top >= 1 {
      throw .invalidRequest("OWL's rates reach \(top) at sparsity \(target) with λ = \(lambda): lower --owl-lambda or --sparsity")
    }
    return rates
  }

  /// D_l of every block, from the calibration windows run through the dense model (pass 1). Only the
  /// projections `options.selects` picks count; the model is left unchanged.
  public static func outlierRatios(
    _ model: LlamaModel, windows: [[Int32]], options: PruneOptions, m: Double, progress: ((Int, Int) -> Void)? = nil
  ) throws(SurgeryError) -> [Double] {
    let T = try Pruner.windowLength(windows)
    let c = model.config
    let sweep = try Pruner.embeddedSweep(model, windows: windows, options: options)
    let (cluster, mine) = (options.cluster, try Pruner.calibrationShare(windows, options: options))
    var ratios: [Double] = []
    for l in 0..<c.layers {
      try model.prepare(block: l)
      let names = LlamaTensors.projections.map { "model.layers.\(l).\($0).weight" }
      let original = model.linears[l]
      var statistics: [(name: String, stats: WandaStatistics)] = []
      for (p, name) in names.enumerated() where options.selects(name) {
        let stats = WandaStatistics(columns: original[p].inFeatures, deferred: cluster.size > 1)
        statistics.append((name, stats))
        model.linears[l][p] = RecordingLinear(original[p]) { x, n in stats.add(x, tokens: n, sequences: n / T) }
      }
      // The dense block records its inputs and produces the next block's (no weight changes in pass 1).
      try sweep.run(block: l, advance: true)
      model.linears[l] = original
      for entry in statistics { try entry.stats.reduce(on: cluster, before: mine.lowerBound, total: windows.count) }
      let linears = statistics.map { entry in
        (weight: UnsafePointer(model.params.base + model.params.layout.entry(entry.name)!.offset), shape: model.shape(entry.name)!, stats: entry.stats)
      }
      ratios.append(outlierRatio(linears, m: m))
      progress?(l + 1, c.layers)
    }
    return ratios
  }

  /// 100 · the fraction of the block's scores |W_ij|·‖X_j‖ above m times their mean.
  static func outlierRatio(_ linears: [(weight: UnsafePointer<Float>, shape: [Int], stats: WandaStatistics)], m: Double) -> Double {
    var sum = 0.0, count = 0
    let norms = linears.map { $0.stats.scaler.map { Float($0.squareRoot()) } }
    func forEachScore(_ body: (Float) -> Void) {
      for (i, linear) in linears.enumerated() {
        let (rows, cols) = (linear.shape[0], linear.shape[1])
        norms[i].withUnsafeBufferPointer { norm in
          for r in 0..<rows {
            let row = linear.weight + r * cols
            for c in 0..<cols { body(abs(row[c]) * norm[c]) }
          }
        }
      }
    }
    forEachScore { sum += Double($0); count += 1 }
    guard count > 0 else { return 0 }
    let threshold = Float(m * sum / Double(count))
    var above = 0
    forEachScore { if $0 > threshold { above += 1 } }
    return 100 * Double(above) / Double(count)
  }
}
