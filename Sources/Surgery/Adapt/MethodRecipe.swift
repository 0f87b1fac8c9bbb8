// Each adapter method's training recipe as its reference implementation runs it: the defaults of
// `espalier finetune --method M` (../shared/reference/algorithms.md §1.5, §3.7, §4, §5, §6). One learning rate for
// every method hides what the methods do: SPP's change is multiplicative (ΔW = s·W⊙(A b)), so at a
// LoRA-sized rate it barely moves (SmolLM2 at Wanda 50%, 150 steps: 31.57 → 30.74 at lr 2e-4, 31.57 → 18.74 at
// its own recipe).
//
// Our schedule is cosine from `lr` to `minLr` after a linear warmup, for every method; the references that
// decay linearly to 0 (HF Trainer's default) get a floor of 0. The scale is part of the recipe: the methods
// with s = alpha/r keep the reference's s at any --rank (alpha = s·r); LoRS keeps its alpha 16, as rsLoRA's
// s = alpha/sqrt(r) intends. Adapted projections are all seven for every method (the LoRS repository
// trains its baselines that way), so that a comparison changes one thing.

public struct MethodRecipe: Sendable, Equatable {
  public var lr: Double
  /// The cosine schedule's floor.
  public var minLr: Double
  /// Warmup steps, plus this fraction of the run's steps (rounded): the references give one or the other.
  public var warmupSteps: Int
  public var warmupRatio: Double
  public var weightDecay: Double
  public var maxGradNorm: Double
  /// The adapter scale s at the reference's rank.
  public var scale: Double
  /// The reference's alpha when it is kept whatever the rank (LoRS: rsLoRA's s = alpha/sqrt(r) is made so
  /// that alpha need not change with r); nil: alpha = s·r, the reference's s at every rank.
  public var fixedAlpha: Double?
  public var dropout: Double
  /// Where the recipe comes from, for --help and the README.
  public var source: String

  public static func of(_ method: AdapterMethod) -> MethodRecipe {
    switch method {
    case .lors:
      // LoRS scripts/sft*.sh: lr 2e-5 cosine to 1e-6, no warmup, no weight decay, grad clip 1.0,
      // r 16, alpha 16 with s = alpha/sqrt(r) = 4.
      return MethodRecipe(
        lr: 2e-5, minLr: 1e-6, warmupSteps: 0, warmupRatio: 0, weightDecay: 0, maxGradNorm: 1.0, scale: 4, fixedAlpha: 16, dropout: 0,
        source: "LoRS scripts/sft.sh: lr 2e-5 cosine to 1e-6, no warmup, no weight decay, s = 16/sqrt(16) = 4")
    case .lora:
      // Wanda's lora_ft (the LoRA recovery of a pruned model): lr 1e-4, 5 warmup steps, r 8 alpha 16 (s = 2),
      // dropout 0.05, HF Trainer (linear decay to 0, grad clip 1.0, no weight decay).
      return MethodRecipe(
        lr: 1e-4, minLr: 0, warmupSteps: 5, warmupRatio: 0, weightDecay: 0, maxGradNorm: 1.0, scale: 2, fixedAlpha: nil, dropout: 0.05,
        source: "Wanda lora_ft: lr 1e-4, 5 warmup steps, s = 16/8 = 2, dropout 0.05")
    case .sqft:
      // SQFT SparsePEFT: lr 3e-4 cosine, 100 warmup steps (7% of its ~1,400 GSM8K steps: 7,473 examples,
      // batch 16, 3 epochs), r 32 alpha 64 (s = 2), dropout 0.1.
      return MethodRecipe(
        lr: 3e-4, minLr: 0, warmupSteps: 0, warmupRatio: 0.07, weightDecay: 0, maxGradNorm: 1.0, scale: 2, fixedAlpha: nil, dropout: 0.1,
        source: "SQFT SparsePEFT: lr 3e-4 cosine, warmup 7% (100 of ~1,400 steps), s = 64/32 = 2, dropout 0.1")
    case .spp:
      // SPP finetune.py: lr 4e-3, warmup_ratio 0.03, weight decay 0.001, r 8 alpha 16 (s = 2).
      return MethodRecipe(
        lr: 4e-3, minLr: 0, warmupSteps: 0, warmupRatio: 0.03, weightDecay: 0.001, maxGradNorm: 1.0, scale: 2, fixedAlpha: nil, dropout: 0,
        source: "SPP finetune.py: lr 4e-3, warmup 3%, weight decay 0.001, s = 16/8 = 2")
    case .losa:
      // LoSA: lr 2e-4 linear, warmup_ratio 0.3, weight decay 0.001, max_grad_norm 0.3, r 8 alpha 16 (s = 2).
      return MethodRecipe(
        lr: 2e-4, minLr: 0, warmupSteps: 0, warmupRatio: 0.3, weightDecay: 0.001, maxGradNorm: 0.3, scale: 2, fixedAlpha: nil, dropout: 0,
        source: "LoSA: lr 2e-4, warmup 30% of each round, weight decay 0.001, grad clip 0.3, s = 16/8 = 2")
    }
  }

  /// The warmup of a run of `steps` steps.
  public func warmup(steps: Int) -> Int { warmupSteps + Int((warmupRatio * Double(steps)).rounded()) }

  /// The default alpha at `rank` under `rule`: the reference's own, or the one that keeps its scale.
  public func alpha(rank: Int, rule: ScaleRule) -> Double {
    if let fixedAlpha { return fixedAlpha }
    switch rule {
    case .lora: return scale * Double(rank)
    case .rslora: return scale * Double(rank).squareRoot()
    }
  }
}
