// What an adapter does to its base, per projection and per decoder layer (espalier report): the zeros
// before (the base W) and after the merge (W', exactly the tensor espalier merge writes: Merge.plan's
// factors, Merge.mergedWeight with the run's method, rank and scale, cast back to the base's dtype by
// Merge.cast), and the Frobenius norms ‖W‖ and ‖W' − W‖. A lora adapter merges densely, so its zeros
// fill: that is what the report shows. One tensor at a time, so memory stays O(largest tensor).

import Formats

/// One adapted projection. Norms are accumulated in f64 over the stored values.
public struct ProjectionEffect: Equatable, Sendable {
  /// The module, e.g. "model.layers.3.self_attn.q_proj".
  public var module: String
  /// Its decoder layer (`model.layers.N.`), nil for a module outside the layers.
  public var layer: Int?
  public var elements: Int
  public var zerosBefore: Int
  public var zerosAfter: Int
  /// ‖W‖²_F and ‖W' − W‖²_F.
  public var weightSquared: Double
  public var deltaSquared: Double
  /// Kept weights the merge would have made zero, raised to the dtype's smallest normal (as merge does).
  public var raised: Int
}

/// The sum over the adapted projections of one decoder layer (or of all of them, for the total).
public struct LayerEffect: Equatable, Sendable {
  public var layer: Int?
  public var projections = 0
  public var elements = 0
  public var zerosBefore = 0
  public var zerosAfter = 0
  public var weightSquared = 0.0
  public var deltaSquared = 0.0

  public var sparsityBefore: Double { elements == 0 ? 0 : Double(zerosBefore) / Double(elements) }
  public var sparsityAfter: Double { elements == 0 ? 0 : Double(zerosAfter) / Double(elements) }
  public var weightNorm: Double { weightSquared.squareRoot() }
  public var deltaNorm: Double { deltaSquared.squareRoot() }
  /// ‖W' − W‖_F / ‖W‖_F over the layer's projections (NaN for an all-zero base).
  public var relativeChange: Double { weightSquared > 0 ? (deltaSquared / weightSquared).squareRoot() : .nan }

  mutating func add(_ p: ProjectionEffect) {
    projections += 1
    elements += p.elements
    zerosBefore += p.zerosBefore
    zerosAfter += p.zerosAfter
    weightSquared += p.weightSquared
    deltaSquared += p.deltaSquared
  }
}

public struct AdapterEffect: Equatable, Sendable {
  public var method: AdapterMethod
  public var scale: Float
  public var rank: Int
  /// In the adapter's order (layer by layer).
  public var projections: [ProjectionEffect]

  /// Per decoder layer, in layer order (modules outside the layers last, as one row with layer nil).
  public var layers: [LayerEffect] {
    var byLayer: [Int?: LayerEffect] = [:]
    for p in projections { byLayer[p.layer, default: LayerEffect(layer: p.layer)].add(p) }
    return byLayer.values.sorted { ($0.layer ?? Int.max) < ($1.layer ?? Int.max) }
  }

  /// Every adapted projection together.
  public var total: LayerEffect {
    var total = LayerEffect(layer: nil)
    for p in projections { total.add(p) }
    return total
  }

  /// Measures the adapter in `adapterDirectory` against `base`. The adapter is checked as espalier merge
  /// checks it (method, shapes, the recorded base fingerprints; a lora adapter is allowed, since only
  /// its numbers are wanted): one that does not fit throws `.checkpoint(path: adapterDirectory, ...)`
  /// listing every mismatch. `progress(done, total)` after each projection.
  public static func measure(
    base: any CheckpointReader, adapterDirectory: String, progress: (Int, Int) -> Void = { _, _ in }
  ) throws(SurgeryError) -> AdapterEffect {
    let plan = try Merge.plan(base: base, adapterDirectory: adapterDirectory, allowDensify: true)
    let infos = Dictionary(base.infos.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    let modules = plan.adapter.prefixes.filter { plan.factors[$0] != nil }
    var projections: [ProjectionEffect] = []
    for (done, module) in modules.enumerated() {
      guard let info = infos[module + ".weight"] else { continue }
      let effect = try SurgeryError.wrapping(base.file(of: info.name)) { () throws -> ProjectionEffect in
        defer { base.release(info.name) }
        let w = try base.tensor(info.name).float32()
        let (merged, raised) = try Merge.cast(
          try plan.merged(info, base: w)!, weight: w, name: info.name, shape: info.shape, dtype: info.dtype)
        return measure(module: module, before: w, after: try merged.float32(), raised: raised)
      }
      projections.append(effect)
      progress(done + 1, modules.count)
    }
    return AdapterEffect(method: plan.adapter.method, scale: plan.adapter.scale, rank: plan.adapter.rank, projections: projections)
  }

  /// Zeros (-0.0 counts) and squared norms of one projection, before and after.
  static func measure(module: String, before w: [Float], after m: [Float], raised: Int) -> ProjectionEffect {
    var (zerosBefore, zerosAfter, weight, delta) = (0, 0, 0.0, 0.0)
    w.withUnsafeBufferPointer { w in
      m.withUnsafeBufferPointer { m in
        for k in 0..<w.count {
          let (a, b) = (Double(w[k]), Double(m[k]))
          if a == 0 { zerosBefore += 1 }
          if b == 0 { zerosAfter += 1 }
          weight += a * a
          delta += (b - a) * (b - a)
        }
      }
    }
    return ProjectionEffect(
      module: module, layer: layer(of: module), elements: w.count, zerosBefore: zerosBefore, zerosAfter: zerosAfter,
      weightSquared: weight, deltaSquared: delta, raised: raised)
  }

  /// N of "model.layers.N.…" (any "layers.N" pair of components), or nil.
  static func layer(of module: String) -> Int? {
    let parts = module.split(separator: ".")
    guard let i = parts.firstIndex(of: "layers"), i + 1 < parts.count else { return nil }
    return Int(parts[i + 1])
  }
}
