// `espalier verify`, the CI gate: integrity, sparsity and preservation of a checkpoint, tensor by tensor
// and in parallel over tensors (one worker per core, each holding O(largest tensor)).
//
//   integrity     every tensor decodes (compressed checkpoints check their frame and tensor checksums),
//                 names, shapes and dtypes agree with config.json, no NaN/Inf unless allowed;
//   sparsity      per-tensor and global ratio over the projection weights (the *_proj matrices pruning
//                 and adapters touch), a minimum global ratio, every group of an N:M pattern;
//   preservation  against a base: each projection's zero set equals the base's exactly (no zero filled;
//                 no new zero unless allowed), every other tensor byte-identical; with an adapter, the
//                 adapted weights equal the base merged with it (Merge.mergedWeight in f32) within half an
//                 ulp of the storage dtype, and everything else is byte-identical to the base.
// Zeros are read on the stored bits (Sparsity: -0.0 is zero), values widened to f32 only for the adapter.

import Dispatch
import Formats

#if canImport(Glibc)
  import Glibc
#endif

public struct VerifyOptions: Sendable {
  public var minSparsity: Double?
  public var pattern: NMPattern?
  public var allowNonfinite = false
  public var allowNewZeros = false
  public init() {}
}

/// One named check and what it found: no failures means it passed. Verify records every check it makes,
/// passed or failed, so that a report can list them (`espalier verify --junit`: a test case per check).
public struct VerifyCheck: Sendable, Equatable {
  public var name: String
  public var failures: [String]
  public var passed: Bool { failures.isEmpty }
}

extension Array where Element == VerifyCheck {
  /// Records `failure` (nil: passed) under the check `name`, joining an earlier record of that check.
  mutating func record(_ name: String, _ failure: String? = nil) {
    let found = failure.map { [$0] } ?? []
    if let i = firstIndex(where: { $0.name == name }) { self[i].failures += found } else { append(VerifyCheck(name: name, failures: found)) }
  }
}

/// What verify found in one tensor; `failures` empty means it passed.
public struct TensorVerdict: Sendable {
  public var info: TensorInfo
  public var file: String
  /// A projection weight (the tensors pruning and adapters touch).
  public var projection: Bool
  public var sparsity: SparsityStats?
  public var pattern: PatternStats?
  public var nonfinite = 0
  /// Against the base: zeros filled (base zero, model not) and new zeros (model zero, base not).
  public var zerosFilled: Int?
  public var newZeros: Int?
  /// Against the base, for tensors that must not change.
  public var identical: Bool?
  /// With an adapter: elements off the merged value by more than half an ulp, and the largest error in ulps.
  public var adapterMismatches: Int?
  public var adapterMaxUlps: Double?
  /// Every check made on this tensor.
  public var checks: [VerifyCheck] = []
  public var failures: [String] { checks.flatMap(\.failures) }
}

public struct VerifyReport: Sendable {
  public var model: String
  public var base: String?
  public var adapter: String?
  public var method: AdapterMethod?
  public var tensors: [TensorVerdict]
  /// Checkpoint-level checks (config.json, the tensor list against the base, global sparsity).
  public var checks: [VerifyCheck] = []
  /// Checkpoint-level failures (missing tensors, config disagreements, sparsity below the minimum).
  public var failures: [String] { checks.flatMap(\.failures) }
  /// Facts worth a line that fail nothing (unchecked config, extra tensors).
  public var notes: [String]
  public var options: VerifyOptions
  /// Zeros over the projection weights.
  public var globalSparsity: SparsityStats {
    tensors.filter(\.projection).compactMap(\.sparsity).reduce(SparsityStats(elements: 0, zeros: 0)) {
      SparsityStats(elements: $0.elements + $1.elements, zeros: $0.zeros + $1.zeros)
    }
  }
  public var passed: Bool { failures.isEmpty && tensors.allSatisfy(\.failures.isEmpty) }
}

public enum Verifier {
  public static func isProjection(_ info: TensorInfo) -> Bool {
    info.shape.count == 2 && info.name.hasPrefix("model.layers.") && info.name.hasSuffix("_proj.weight")
  }

  /// Verifies `model` (and against `base`, with `adapterDirectory` when given). Throws only when an input
  /// cannot be opened at all; everything found inside is in the report.
  public static func verify(
    model: any CheckpointReader, base: (any CheckpointReader)?, adapterDirectory: String?, options: VerifyOptions,
    progress: ((_ done: Int, _ total: Int) -> Void)? = nil
  ) throws(SurgeryError) -> VerifyReport {
    var report = VerifyReport(
      model: model.path, base: base?.path, adapter: adapterDirectory, tensors: [], notes: [], options: options)
    var plan: MergePlan?
    if let adapterDirectory {
      guard let base else { throw .invalidRequest("--adapter needs --base: the adapter is checked against the base it merges into") }
      plan = try Merge.plan(base: base, adapterDirectory: adapterDirectory, allowDensify: true)
      report.method = plan?.adapter.method
    }
    checkConfig(model, &report)
    let baseInfos = Dictionary((base?.infos ?? []).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    if let base {
      let names = Set(model.infos.map(\.name))
      let check = "the same tensors as the base"
      report.checks.record(check)
      for info in base.infos where !names.contains(info.name) { report.checks.record(check, "`\(info.name)` is in the base but not in the model") }
      for info in model.infos where baseInfos[info.name] == nil { report.checks.record(check, "`\(info.name)` is in the model but not in the base") }
    }
    report.tensors = checkTensors(model, base, baseInfos, plan, options, progress)
    let global = report.globalSparsity
    if let minimum = options.minSparsity {
      report.checks.record(
        "global sparsity at least \(percent(minimum))",
        global.ratio < minimum
          ? "global sparsity of the projection weights is \(percent(global.ratio)) (\(global.zeros) zeros in \(global.elements)), below the minimum \(percent(minimum))"
          : nil)
    }
    if options.minSparsity != nil || options.pattern != nil {
      report.checks.record(
        "projection weights present",
        report.tensors.contains(where: \.projection) ? nil : "no projection weights (model.layers.*_proj.weight) to check sparsity on")
    }
    return report
  }

  /// "50.00%".
  static func percent(_ r: Double) -> String {
    let hundredths = Int((r * 10000).rounded())
    let fraction = String(hundredths % 100)
    return "\(hundredths / 100).\(fraction.count < 2 ? "0" + fraction : fraction)%"
  }

  /// Names and shapes against config.json's Llama layout, dtypes against its torch_dtype.
  static func checkConfig(_ model: any CheckpointReader, _ report: inout VerifyReport) {
    let config: LlamaConfig, torchDtype: String?, dtype: DType?
    let configCheck = "config.json describes the tensors"
    switch CheckpointConfig.of(model) {
    case .absent:
      // A checkpoint without its config is one transformers cannot load: the gate fails it.
      report.checks.record(configCheck, "no config.json beside the weights (transformers cannot load the checkpoint without it)")
      return
    case .invalid(_, let reason):
      report.checks.record(configCheck, reason)
      return
    case .foreign(let file, let reason):
      report.checks.record(configCheck, "\(file) is not a usable Llama-family config: \(reason)")
      return
    case .llama(let c, let t, let d): (config, torchDtype, dtype) = (c, t, d)
    }
    report.checks.record(configCheck)
    do {
      try config.checkTensors(model.infos, file: model.path, configFile: FileSystem.checkpointDirectory(of: model.path) + "/config.json")
    } catch {
      for problem in error.problems { report.checks.record(configCheck, problem.description) }
      return
    }
    let expected = LlamaTensors.names(config)
    let known = Set(expected.map(\.0))
    let weights = model.infos.filter { known.contains($0.name) && !$0.dtype.isFloatingPoint }
    let dtypeCheck = "weights are floating point, in config.json's torch_dtype"
    report.checks.record(dtypeCheck)
    for info in weights {
      report.checks.record(dtypeCheck, "`\(info.name)` is \(info.dtype); weights must be a floating-point dtype")
    }
    let extra = model.infos.filter { !known.contains($0.name) }.map(\.name)
    if !extra.isEmpty { report.notes.append("tensors config.json does not name: \(extra.prefix(5).joined(separator: ", "))\(extra.count > 5 ? ", ..." : "")") }
    if let torchDtype, let dtype {
      let off = model.infos.filter { $0.dtype.isFloatingPoint && $0.dtype != dtype && known.contains($0.name) }
      for found in Set(off.map(\.dtype)).sorted(by: { $0.rawValue < $1.rawValue }) {
        let names = off.filter { $0.dtype == found }.map(\.name)
        report.checks.record(dtypeCheck, "\(names.count) tensors are \(found) but config.json's torch_dtype is \(torchDtype) (`\(names[0])`\(names.count > 1 ? ", ..." : ""))")
      }
    }
  }

  /// Checks every tensor, the largest first, spread over the cores.
  static func checkTensors(
    _ model: any CheckpointReader, _ base: (any CheckpointReader)?, _ baseInfos: [String: TensorInfo], _ plan: MergePlan?,
    _ options: VerifyOptions, _ progress: ((Int, Int) -> Void)?
  ) -> [TensorVerdict] {
    let infos = model.infos
    let order = infos.indices.sorted { (infos[$0].byteCount ?? 0) > (infos[$1].byteCount ?? 0) }
    final class Results: @unchecked Sendable {
      var verdicts: [TensorVerdict?]
      var next = 0, done = 0
      let lock = Lock()
      init(_ n: Int) { verdicts = Array(repeating: nil, count: n) }
    }
    let results = Results(infos.count)
    nonisolated(unsafe) let (model, base, plan, progress) = (model, base, plan, progress)
    let workers = min(Parallel.workers, max(1, infos.count))
    DispatchQueue.concurrentPerform(iterations: workers) { _ in
      while true {
        let k: Int? = results.lock.withLock {
          guard results.next < order.count else { return nil }
          defer { results.next += 1 }
          return order[results.next]
        }
        guard let k else { return }
        let info = infos[k]
        // Not under Denormals.flushed: subnormal weights are values here, compared exactly.
        let verdict = checkTensor(info, model, base, baseInfos[info.name], plan, options)
        results.lock.withLock {  // progress is reported under the lock: callers need not be thread-safe
          results.verdicts[k] = verdict
          results.done += 1
          progress?(results.done, infos.count)
        }
      }
    }
    return results.verdicts.map { $0! }
  }
}

/// A mutex for the few shared counters of a parallel loop.
final class Lock: @unchecked Sendable {
  private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
  init() { pthread_mutex_init(mutex, nil) }
  deinit {
    pthread_mutex_destroy(mutex)
    mutex.deallocate()
  }
  func withLock<R>(_ body: () -> R) -> R {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    return body()
  }
}
