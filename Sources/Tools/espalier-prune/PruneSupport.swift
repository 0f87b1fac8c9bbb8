// espalier-prune's inputs and report.

import ArgumentParser
import Formats
import Surgery
import ToolSupport

/// How sparsity is spread over the blocks.
enum SparsityProfile: String, CaseIterable, ExpressibleByArgument {
  case uniform, owl
}

/// --include / --exclude as regular expressions on tensor names (searched, not anchored).
struct TensorFilter: Sendable {
  let include: String?
  let exclude: String?
  func matches(_ name: String) -> Bool {
    if let include, let r = try? Regex(include), name.firstMatch(of: r) == nil { return false }
    if let exclude, let r = try? Regex(exclude), name.firstMatch(of: r) != nil { return false }
    return true
  }
}

enum PruneSummary {
  static func print(_ r: PruneReport, options: PruneOptions, output: String, seconds: Double, json: Bool) {
    if json {
      Output.json(.object(JSONObject([
        ("output", .string(output)), ("method", .string(options.method.rawValue)),
        ("target", .string(options.target.description)), ("tensors", .number(String(r.tensors.count))),
        ("zeros", .number(String(r.zeros))), ("elements", .number(String(r.elements))),
        ("sparsity", .number(Format.fixed(r.sparsity, 6))), ("seconds", .number(Format.fixed(seconds, 2))),
        ("layer_sparsity", r.layerSparsity?.json ?? .null),
        ("warnings", .array(r.warnings.map { .string($0) })), ("mpi", ClusterLaunch.json),
      ])))
    } else {
      Output.line("pruned \(r.tensors.count) tensors with \(options.method.rawValue) (\(options.target)) -> \(output)")
      Output.line("sparsity: \(Format.percent(r.sparsity)) (\(r.zeros) zeros of \(r.elements))  time: \(Format.fixed(seconds, 1)) s")
      if let layers = r.layerSparsity, let low = layers.rates.min(), let high = layers.rates.max() {
        Output.line(
          "layer sparsity (\(layers.profile)): \(Format.percent(low)) to \(Format.percent(high)) over \(layers.rates.count) blocks -> \(output)/\(LayerSparsity.fileName)")
      }
    }
  }
}
