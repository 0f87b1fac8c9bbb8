// The families beyond Llama against HF transformers and PEFT on tiny random models
// (fixtures/make_family_goldens.py): Qwen3 (per-head q/k RMSNorm before RoPE, explicit head_dim) and
// Gemma 3 (√hidden embedding scale, (1 + w) norms, four norms per block, GeGLU, query_pre_attn_scalar,
// sliding-window layers with their own RoPE base, linear RoPE scaling on full layers). For each: logits,
// loss, every block input and its gradient, every projection's weight gradient, a PEFT LoRA's logits and
// gradients, and decoding with the KV cache.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

@Suite struct FamilyGoldenTests {
  static let families = ["qwen3", "gemma3"]

  struct Golden {
    let file: SafetensorsFile
    init(_ family: String) throws { file = try SafetensorsFile(path: fixturePath("families/\(family)_golden.safetensors")) }
    func values(_ name: String) throws -> [Float] { try file.tensor(name).float32() }
    func ids(_ name: String) throws -> [Int32] { try file.tensor(name).withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) } }
  }

  @Test func configsReadAsTheirFamilies() throws {
    let qwen = try LlamaModel.load(fixturePath("tiny-qwen3")).config
    #expect(qwen.qkNorm && !qwen.isGemma3 && qwen.headDim == 24 && qwen.qDim == 96 && qwen.hiddenSize == 64 && qwen.tieWordEmbeddings)
    #expect(qwen.window(layer: 0) == nil && qwen.ropeTheta == 1e6)
    let gemma = try LlamaModel.load(fixturePath("tiny-gemma3")).config
    #expect(gemma.isGemma3 && gemma.qkNorm && gemma.tieWordEmbeddings && gemma.queryPreAttnScalar == 24)
    #expect(gemma.slidingLayers == [true, true, false] && gemma.window(layer: 1) == 5 && gemma.window(layer: 2) == nil)
    #expect(gemma.localRopeTheta == 1e4 && gemma.ropeTheta == 1e6 && gemma.ropeScaling?.type == "linear" && gemma.ropeScaling?.factor == 8)
  }

  @Test(arguments: families)
  func forwardAndBackwardMatchTransformers(family: String) throws {
    let golden = try Golden(family)
    let model = try LlamaModel.load(fixturePath("tiny-\(family)"))
    let c = model.config
    let (runner, logits, result, grads) = try forwardBackwardKeepingWeightGradients(
      model, tokens: try golden.ids("input_ids"), targets: try golden.ids("targets"))
    #expect(abs(result.loss - (try golden.values("loss"))[0]) < 1e-5, "\(family) loss \(result.loss)")
    #expect(maxAbsDiff(logits, try golden.values("logits")) < 1e-4, "\(family) logits")
    for l in 0..<c.layers {
      #expect(maxAbsDiff(runner.layerInput(l), try golden.values("layer_input.\(l)")) < 1e-4, "\(family) layer \(l) input")
      #expect(maxAbsDiff(runner.layerInputGradients[l], try golden.values("grad.layer_input.\(l)")) < 1e-5, "\(family) layer \(l) input gradient")
      for name in LlamaTensors.projections {
        let full = "model.layers.\(l).\(name).weight"
        let entry = try #require(grads.layout.entry(full))
        let ours = Array(UnsafeBufferPointer(start: grads.base + entry.offset, count: entry.count))
        #expect(maxAbsDiff(ours, try golden.values("grad." + full)) < 1e-5, "\(family) \(full) gradient")
      }
    }
    #expect(maxAbsDiff(runner.layerInputGradients[c.layers], try golden.values("grad.final_norm_input")) < 1e-5)

    // Checkpointed layers recompute what the norms saved: the same gradients.
    let again = LlamaRunner(model: model, B: 2, T: 16, recomputedLayers: c.layers)
    again.captureLayerInputGradients = true
    try again.forward(tokens: try golden.ids("input_ids"), targets: try golden.ids("targets"), prepareBackward: true)
    try again.backward()
    #expect(maxAbsDiff(again.layerInputGradients[0], runner.layerInputGradients[0]) < 1e-6)
  }

  @Test(arguments: families)
  func peftLoRAGivesPEFTsLogitsAndGradients(family: String) throws {
    let golden = try Golden(family)
    let model = try LlamaModel.load(fixturePath("tiny-\(family)"))
    let directory = fixturePath("families/\(family)-lora")
    let config = try PEFTAdapter.readConfig(directory)
    let adapters = try AdapterSet(
      model: model, method: .lora, rank: config.rank, scale: ScaleRule.lora.scale(alpha: config.alpha, rank: config.rank),
      targets: config.targetModules)
    try adapters.load(peft: try PEFTAdapter.openWeights(directory))
    adapters.attach(to: model)
    adapters.zeroGrad()
    let c = model.config
    var logits = [Float](repeating: 0, count: 32 * c.vocabSize)
    let runner = LlamaRunner(model: model, B: 2, T: 16)
    let result = try runner.forward(tokens: try golden.ids("input_ids"), targets: try golden.ids("targets"), prepareBackward: true) { n, row in
      for v in 0..<c.vocabSize { logits[n * c.vocabSize + v] = row[v] }
    }
    try runner.backward()
    #expect(maxAbsDiff(logits, try golden.values("lora.logits")) < 1e-4)
    #expect(abs(result.loss - (try golden.values("lora.loss"))[0]) < 1e-5)
    #expect(adapters.peftNames.count == 14 * c.layers)
    for (peft, name) in adapters.peftNames {
      let entry = try #require(adapters.grads.layout.entry(name))
      let ours = Array(UnsafeBufferPointer(start: adapters.grads.base + entry.offset, count: entry.count))
      #expect(maxAbsDiff(ours, try golden.values("lora.grad." + peft)) < 1e-5, "\(family) \(peft)")
    }
  }

  /// Decoding with the KV cache gives transformers' logits at the last position (the per-head norms, and
  /// for Gemma 3 the window and the sublayer norms, in both paths).
  @Test(arguments: families)
  func decoderMatchesTheFullForward(family: String) throws {
    let golden = try Golden(family)
    let model = try LlamaModel.load(fixturePath("tiny-\(family)"))
    let tokens = Array(try golden.ids("input_ids").prefix(16))
    let decoder = try Decoder(model: model, capacity: 16, chunk: 5)
    var stepped = try decoder.feed(Array(tokens.prefix(9)))
    for t in tokens.dropFirst(9) { stepped = try decoder.feed([t]) }
    let V = model.config.vocabSize
    #expect(maxAbsDiff(stepped, Array(try golden.values("logits")[(15 * V)..<(16 * V)])) < 1e-4)
  }

  @Test func otherModelTypesAndUnsupportedSettingsAreRefusedByName() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-family-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    func refusal(_ family: String, _ from: String, _ to: String) throws -> String {
      let config = try String(contentsOfFile: fixturePath("tiny-\(family)/config.json"), encoding: .utf8)
      #expect(config.contains(from), "\(from)")
      try config.replacingOccurrences(of: from, with: to).write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
      do {
        _ = try LlamaConfig(contentsOf: dir)
        return "accepted"
      } catch { return "\(error)" }
    }
    #expect(try refusal("qwen3", "\"model_type\": \"qwen3\"", "\"model_type\": \"phi3\"")
      .contains("model_type `phi3` is not supported (supported: llama, mistral, qwen2, qwen3, gemma3_text)"))
    #expect(try refusal("qwen3", "\"use_sliding_window\": false", "\"use_sliding_window\": true").contains("use_sliding_window"))
    #expect(try refusal("gemma3", "\"final_logit_softcapping\": null", "\"final_logit_softcapping\": 30.0").contains("final_logit_softcapping"))
    #expect(try refusal("gemma3", "\"hidden_activation\": \"gelu_pytorch_tanh\"", "\"hidden_activation\": \"relu\"").contains("hidden_activation"))
    #expect(try refusal("gemma3", "\"sliding_window\": 5", "\"sliding_window\": 0").contains("sliding_window"))
  }

  /// transformers 5 writes Gemma 3's RoPE per layer type and the layer types themselves; both styles read
  /// the same.
  @Test func gemmaConfigInTransformers5StyleReadsTheSame() throws {
    let hub = try LlamaModel.load(fixturePath("tiny-gemma3")).config
    var object = try JSONFile.object(fixturePath("tiny-gemma3/config.json"))
    for key in ["rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window_pattern"] { object[key] = nil }
    object["layer_types"] = .array([.string("sliding_attention"), .string("sliding_attention"), .string("full_attention")])
    object["rope_parameters"] = .object(JSONObject([
      ("full_attention", .object(JSONObject([("rope_type", .string("linear")), ("factor", .number("8.0")), ("rope_theta", .number("1000000.0"))]))),
      ("sliding_attention", .object(JSONObject([("rope_type", .string("default")), ("rope_theta", .number("10000.0"))]))),
    ]))
    let five = try LlamaConfig(json: object, file: "config.json")
    #expect(five == hub)
  }
}
