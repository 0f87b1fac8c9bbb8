// The one place that knows how Llama tensors are named in HF checkpoints and in GGUF files, and the
// Q/K row permutation llama.cpp's converter applies on the way to GGUF (formats.md §4.4, §4.6).

public enum LlamaNames {
  /// Per-layer tensors: GGUF suffix after `blk.N.` and HF suffix after `model.layers.N.`.
  static let layerPairs: [(gguf: String, hf: String)] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
  ]
  static let globalPairs: [(gguf: String, hf: String)] = [
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
  ]

  /// The HF name of a GGUF tensor (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`),
  /// or nil for tensors HF does not store (e.g. `rope_freqs.weight`).
  public static func hfName(gguf name: String) -> String? {
    let (stem, suffix) = splitSuffix(name)
    if let pair = globalPairs.first(where: { $0.gguf == stem }) { return pair.hf + suffix }
    let parts = stem.split(separator: ".", maxSplits: 2).map(String.init)
    guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0,
      let pair = layerPairs.first(where: { $0.gguf == parts[2] })
    else { return nil }
    return "model.layers.\(layer).\(pair.hf)\(suffix)"
  }

  /// The GGUF name of an HF tensor, or nil when GGUF has no name for it.
  public static func ggufName(hf name: String) -> String? {
    let (stem, suffix) = splitSuffix(name)
    if let pair = globalPairs.first(where: { $0.hf == stem }) { return pair.gguf + suffix }
    guard stem.hasPrefix("model.layers.") else { return nil }
    let rest = stem.dropFirst("model.layers.".count)
    guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]) else { return nil }
    let module = String(rest[rest.index(after: dot)...])
    guard let pair = layerPairs.first(where: { $0.hf == module }) else { return nil }
    return "blk.\(layer).\(pair.gguf)\(suffix)"
  }

  /// Which heads count a tensor's rows are permuted with in GGUF, if any: Q uses the attention heads,
  /// K the key/value heads. Weights and biases alike.
  public static func permutationHeads(hfName name: String, heads: Int, kvHeads: Int) -> Int? {
    if name.hasSuffix("self_attn.q_proj.weight") || name.hasSuffix("self_attn.q_proj.bias") { return heads }
    if name.hasSuffix("self_attn.k_proj.weight") || name.hasSuffix("self_attn.k_proj.bias") { return kvHeads }
    return nil
  }

  private static func splitSuffix(_ name: String) -> (String, String) {
    for suffix in [".weight", ".bias"] where name.hasSuffix(suffix) {
      return (String(name.dropLast(suffix.count)), suffix)
    }
    return (name, "")
  }
}

/// llama.cpp's Q/K permutation: within each head of `hd` rows, HF's rotate-half layout (first half,
/// second half) is interleaved into RoPE pairs. GGUF row `h·hd + 2i + j` holds HF row `h·hd + j·hd/2 + i`.
/// Rows are moved as whole byte runs, so it works on quantised rows without dequantising.
public enum QKPermutation {
  /// The HF row that GGUF row `g` holds.
  public static func hfRow(ofGGUFRow g: Int, rows: Int, heads: Int) -> Int {
    let hd = rows / heads
    let (h, r) = (g / hd, g % hd)
    return h * hd + (r % 2) * (hd / 2) + r / 2
  }

  /// GGUF -> HF: `dst` row `hfRow(g)` = `src` row g.
  public static func unpermute(
    _ src: UnsafeRawPointer, into dst: UnsafeMutableRawPointer, rows: Int, rowBytes: Int, heads: Int
  ) throws(FormatError) {
    try check(rows: rows, heads: heads)
    for g in 0..<rows {
      (dst + hfRow(ofGGUFRow: g, rows: rows, heads: heads) * rowBytes).copyMemory(from: src + g * rowBytes, byteCount: rowBytes)
    }
  }

  /// HF -> GGUF: `dst` row g = `src` row `hfRow(g)`.
  public static func permute(
    _ src: UnsafeRawPointer, into dst: UnsafeMutableRawPointer, rows: Int, rowBytes: Int, heads: Int
  ) throws(FormatError) {
    try check(rows: rows, heads: heads)
    for g in 0..<rows {
      (dst + g * rowBytes).copyMemory(from: src + hfRow(ofGGUFRow: g, rows: rows, heads: heads) * rowBytes, byteCount: rowBytes)
    }
  }

  private static func check(rows: Int, heads: Int) throws(FormatError) {
    guard heads > 0, rows % heads == 0, (rows / heads) % 2 == 0 else {
      throw .invalidPermutation(rows: rows, heads: heads)
    }
  }
}
