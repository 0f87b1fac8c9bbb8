// The training loop: seeded window order, gradient accumulation over micro-batches (the step's gradient is
// that of the mean loss over all its target tokens), global-norm clipping, AdamW with the cosine schedule.
// Its whole state — adapters, AdamW moments and step, data cursor — is `state`/`restore`, so a checkpoint
// taken after step k and resumed continues exactly as an uninterrupted run would. A non-finite loss
// stops the step before any parameter is touched.
//
// Under MPI every rank draws the same global batch (batch × accumulation windows) and takes its share:
// whole micro-batches when the ranks divide --grad-accum, else an equal slice of every micro-batch when
// they divide --batch-size. The adapter gradients, already scaled by the global target count, are summed
// over the ranks in one fixed-order all-reduce, so every rank clips and steps AdamW on the same bits.

import Foundation

public struct TrainingOptions: Sendable {
  public var steps: Int
  /// Windows per micro-batch, and micro-batches per optimizer step.
  public var batchSize = 4
  public var gradAccum = 1
  public var schedule: CosineSchedule
  public var weightDecay = 0.0
  /// Global gradient-norm clip (0 = off).
  public var maxGradNorm = 1.0
  /// Seeds the window order.
  public var seed: UInt64 = 0
  public var gradient: LoRSGradient = .reordered
  /// Layers that keep only their input and are recomputed in backward (the memory plan's choice).
  public var recomputedLayers = 0
  /// The ranks sharing every global batch (MPI), or one process.
  public var cluster = Cluster.single

  public init(steps: Int, schedule: CosineSchedule) {
    self.steps = steps
    self.schedule = schedule
  }
}

/// Everything a checkpoint holds besides the options.
public struct TrainingState: Sendable {
  public var step: Int
  public var cursor: DataCursor
  public var params: [Float]
  public var adamStep: Int
  public var m: [Float]
  public var v: [Float]

  public init(step: Int, cursor: DataCursor, params: [Float], adamStep: Int, m: [Float], v: [Float]) {
    (self.step, self.cursor, self.params, self.adamStep, self.m, self.v) = (step, cursor, params, adamStep, m, v)
  }
}

public struct StepRecord: Sendable {
  /// 1-based step just taken.
  public var step: Int
  /// Mean loss over the step's target tokens (before the update).
  public var loss: Double
  public var learningRate: Double
  /// Global gradient norm before clipping.
  public var gradNorm: Double
  /// Tokens run through the model (batch × T × accumulation) and target tokens among them.
  public var tokens: Int
  public var targetTokens: Int
  public var seconds: Double
  /// Under MPI: seconds this rank spent in the step's collectives (waiting for the others included), and
  /// the bytes they reduced.
  public var collectiveSeconds = 0.0
  public var collectiveBytes = 0
}

public final class Trainer {
  public let model: LlamaModel
  public let adapters: AdapterSet
  public let data: TrainingData
  public let options: TrainingOptions
  public let runner: LlamaRunner
  /// Under MPI: whether this rank takes whole micro-batches (else a slice of each).
  private let sharesMicroBatches: Bool
  private(set) var optimizer: AdamW
  private var order: WindowOrder
  public private(set) var step = 0
  public private(set) var cursor = DataCursor()

  /// A trainer that draws windows from `cursor` on (LoSA's iterations continue one data order).
  public init(
    model: LlamaModel, adapters: AdapterSet, data: TrainingData, T: Int, options: TrainingOptions, cursor: DataCursor = DataCursor()
  ) throws(SurgeryError) {
    guard !data.windows.isEmpty else { throw .noTrainingData(path: "the training data", windowLength: T) }
    guard data.windows.allSatisfy({ $0.inputs.count == T }) else { throw .windowLength(expected: T) }
    self.model = model
    self.adapters = adapters
    self.data = data
    self.options = options
    sharesMicroBatches = try Self.sharesMicroBatches(batchSize: options.batchSize, gradAccum: options.gradAccum, ranks: options.cluster.size)
    let B = options.batchSize
    runner = LlamaRunner(model: model, B: sharesMicroBatches ? B : B / options.cluster.size, T: T, recomputedLayers: options.recomputedLayers)
    optimizer = AdamW(count: adapters.params.layout.totalCount, weightDecay: Float(options.weightDecay))
    order = WindowOrder(count: data.windows.count, seed: options.seed)
    self.cursor = cursor
    adapters.attach(to: model, gradient: options.gradient)
  }

  /// How `ranks` share a global batch of batchSize × gradAccum windows: whole micro-batches (true) when
  /// they divide gradAccum, else a slice of each (false) when they divide batchSize; refused otherwise.
  static func sharesMicroBatches(batchSize B: Int, gradAccum A: Int, ranks: Int) throws(SurgeryError) -> Bool {
    guard A % ranks == 0 || B % ranks == 0 else {
      throw .invalidRequest(
        "\(ranks) ranks cannot share a global batch of \(B) x \(A) windows: make --grad-accum or --batch-size a multiple of \(ranks)")
    }
    return A % ranks == 0
  }

  public var state: TrainingState {
    let count = adapters.params.layout.totalCount
    return TrainingState(
      step: step, cursor: cursor, params: Array(UnsafeBufferPointer(start: adapters.params.base, count: count)),
      adamStep: optimizer.step, m: optimizer.m, v: optimizer.v)
  }

  public func restore(_ s: TrainingState) throws(SurgeryError) {
    let count = adapters.params.layout.totalCount
    guard s.params.count == count, s.m.count == count, s.v.count == count else {
      throw .training("the checkpoint holds \(s.params.count) adapter values; this run has \(count)")
    }
    adapters.params.base.update(from: s.params, count: count)
    optimizer = AdamW(step: s.adamStep, m: s.m, v: s.v, weightDecay: Float(options.weightDecay))
    step = s.step
    cursor = s.cursor
  }

  /// One optimizer step over `gradAccum` micro-batches.
  public func trainStep() throws(SurgeryError) -> StepRecord {
    let start = Date()
    let B = options.batchSize
    var cursor = self.cursor
    let micro = (0..<options.gradAccum).map { _ in order.take(B, from: &cursor) }
    let targetTotal = micro.joined().reduce(0) { $0 + data.windows[$1].targetCount }
    let cluster = options.cluster
    let (seconds0, bytes0) = (cluster.collectiveSeconds, cluster.collectiveBytes)
    let work: [(index: Int, windows: ArraySlice<Int>)] = sharesMicroBatches
      ? cluster.share(of: micro.count).map { ($0, micro[$0][...]) }
      : micro.indices.map { ($0, micro[$0][cluster.share(of: B)]) }
    adapters.zeroGrad()
    // This rank's summed NLL, and the first non-finite loss it met (0 if none).
    var record = [0.0, 0.0]
    for (index, indices) in work {
      // Dropout masks from (seed, step, micro-batch): the same on a resumed run.
      var mixer = SplitMix64(seed: options.seed ^ (UInt64(step) &* 0x9FB2_1C65_1E98_DF25) ^ UInt64(index) &* 0xD6E8_FEB8_6659_FD93)
      adapters.reseedDropout(mixer.next())
      let tokens = indices.flatMap { data.windows[$0].inputs }
      let targets = indices.flatMap { data.windows[$0].targets }
      let result = try runner.forward(tokens: tokens, targets: targets, prepareBackward: true, gradientNormalizer: max(1, targetTotal))
      guard result.loss.isFinite else {
        record[1] = Double(result.loss)
        break
      }
      record[0] += Double(result.loss) * Double(result.count)
      try runner.backward()
    }
    // Every rank learns of a non-finite loss anywhere, and all stop together.
    try cluster.sum(&record)
    guard record[1] == 0 else {
      throw .training("the loss is \(record[1]) at step \(step + 1); stopped before updating (the last checkpoint is kept)")
    }
    let nll = record[0]
    try cluster.sum(adapters.grads.base, count: adapters.params.layout.totalCount)
    let norm = options.maxGradNorm > 0 ? adapters.clipGradients(maxNorm: options.maxGradNorm) : adapters.gradientNorm
    guard norm.isFinite else {
      throw .training("the gradient norm is \(norm) at step \(step + 1); stopped before updating (the last checkpoint is kept)")
    }
    let lr = options.schedule.rate(at: step)
    optimizer.update(adapters.params.base, grads: adapters.grads.base, count: adapters.params.layout.totalCount, lr: lr)
    let values = UnsafeBufferPointer(start: adapters.params.base, count: adapters.params.layout.totalCount)
    guard values.allSatisfy(\.isFinite) else {
      throw .training("the update at step \(step + 1) made adapter values NaN/Inf (learning rate \(lr) too high?); stopped (the last checkpoint is kept)")
    }
    step += 1
    self.cursor = cursor
    var taken = StepRecord(
      step: step, loss: targetTotal > 0 ? nll / Double(targetTotal) : 0, learningRate: lr, gradNorm: norm,
      tokens: B * runner.plan.T * options.gradAccum, targetTokens: targetTotal, seconds: Date().timeIntervalSince(start))
    (taken.collectiveSeconds, taken.collectiveBytes) = (cluster.collectiveSeconds - seconds0, cluster.collectiveBytes - bytes0)
    return taken
  }
}
