// Random-weight BF16 Llama checkpoints with the real shapes of Llama-3.2-1B, Llama-2-7B and Llama-3-8B,
// for scale tests and benchmarks without downloads (the output is never committed). Weights are uniform
// with the standard deviation of HF's initializer (0.02), norms are 1; config.json carries the family's
// real values; the tokenizer is copied from TOKENIZER (any tokenizer.json whose ids fit the vocabulary).
// Tensors are generated one at a time as the writer asks for them, in 5 GB shards as HF publishes them,
// so generating an 8B checkpoint holds one tensor.

import Formats

#if canImport(Glibc)
  import Glibc
#endif

struct ScaleShape {
  var name: String
  var hidden, intermediate, layers, heads, kvHeads, vocab, maxPositions: Int
  var tied: Bool
  var ropeTheta: Double
  var ropeScaling: String

  static let all: [ScaleShape] = [
    ScaleShape(
      name: "llama-3.2-1b", hidden: 2048, intermediate: 8192, layers: 16, heads: 32, kvHeads: 8, vocab: 128256,
      maxPositions: 131072, tied: true, ropeTheta: 500000,
      ropeScaling: #"{"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"}"#),
    ScaleShape(
      name: "llama-2-7b", hidden: 4096, intermediate: 11008, layers: 32, heads: 32, kvHeads: 32, vocab: 32000,
      maxPositions: 4096, tied: false, ropeTheta: 10000, ropeScaling: "null"),
    ScaleShape(
      name: "llama-3-8b", hidden: 4096, intermediate: 14336, layers: 32, heads: 32, kvHeads: 8, vocab: 128256,
      maxPositions: 8192, tied: false, ropeTheta: 500000, ropeScaling: "null"),
  ]

  var config: String {
    """
    {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "attention_bias": false,
      "bos_token_id": 1,
      "eos_token_id": 2,
      "hidden_act": "silu",
      "hidden_size": \(hidden),
      "intermediate_size": \(intermediate),
      "max_position_embeddings": \(maxPositions),
      "mlp_bias": false,
      "num_attention_heads": \(heads),
      "num_hidden_layers": \(layers),
      "num_key_value_heads": \(kvHeads),
      "rms_norm_eps": 1e-05,
      "rope_scaling": \(ropeScaling),
      "rope_theta": \(ropeTheta),
      "tie_word_embeddings": \(tied),
      "torch_dtype": "bfloat16",
      "vocab_size": \(vocab)
    }

    """
  }

  var tensors: [(String, [Int])] {
    let headDim = hidden / heads
    var list: [(String, [Int])] = [("model.embed_tokens.weight", [vocab, hidden])]
    for l in 0..<layers {
      let p = "model.layers.\(l)."
      list += [
        (p + "input_layernorm.weight", [hidden]), (p + "self_attn.q_proj.weight", [heads * headDim, hidden]),
        (p + "self_attn.k_proj.weight", [kvHeads * headDim, hidden]), (p + "self_attn.v_proj.weight", [kvHeads * headDim, hidden]),
        (p + "self_attn.o_proj.weight", [hidden, heads * headDim]), (p + "post_attention_layernorm.weight", [hidden]),
        (p + "mlp.gate_proj.weight", [intermediate, hidden]), (p + "mlp.up_proj.weight", [intermediate, hidden]),
        (p + "mlp.down_proj.weight", [hidden, intermediate]),
      ]
    }
    list.append(("model.norm.weight", [hidden]))
    if !tied { list.append(("lm_head.weight", [vocab, hidden])) }
    return list
  }
}

/// One tensor of random BF16 values: norms 1, weights uniform in ±0.02·√3 (std 0.02), seeded by the name.
func randomBF16(_ name: String, _ shape: [Int]) throws -> Tensor {
  let info = TensorInfo(name: name, dtype: .bf16, shape: shape)
  let count = info.elementCount!
  let storage = OwnedBytes(count: count * 2)
  let out = storage.pointer.bindMemory(to: UInt16.self, capacity: count)
  if name.hasSuffix("norm.weight") {
    for i in 0..<count { out[i] = 0x3F80 }
  } else {
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    for byte in name.utf8 { state = (state ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
    let bound = Float(0.02 * 3.0.squareRoot())
    for i in 0..<count {
      // xorshift64*: the top 24 bits as a uniform in [0, 1).
      state ^= state >> 12
      state ^= state << 25
      state ^= state >> 27
      let u = Float((state &* 0x2545_F491_4F6C_DD1D) >> 40) / Float(1 << 24)
      out[i] = Float32Conversion.floatToBF16((2 * u - 1) * bound)
    }
  }
  return try Tensor(info: info, bytes: storage.bytes, owner: storage)
}

func makeScaleCheckpoint(shape name: String, directory: String, tokenizer: String) throws {
  guard let shape = ScaleShape.all.first(where: { $0.name == name }) else {
    say("unknown shape \(name); one of \(ScaleShape.all.map(\.name).joined(separator: ", "))")
    exit(64)
  }
  let sources = shape.tensors.map { name, dims in
    TensorSource(info: TensorInfo(name: name, dtype: .bf16, shape: dims)) { try randomBF16(name, dims) }
  }
  mkdir(directory, 0o755)
  let t0 = now()
  let files = try SafetensorsCheckpoint.write(sources, toDirectory: directory, maxShardSize: 5_000_000_000)
  try AtomicFile.write(shape.config, to: directory + "/config.json")
  try SideFile(name: "tokenizer.json", content: .copy(from: tokenizer)).write(into: directory)
  let bytes = shape.tensors.reduce(0) { $0 + $1.1.reduce(2, *) }
  say("make-llama: \(shape.name) -> \(directory): \(files.count) files, \(fixed(Double(bytes) / 1e9, 2)) GB, \(fixed(now() - t0, 1)) s")
}
