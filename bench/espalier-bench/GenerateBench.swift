// espalier-bench generate MODEL PROMPT_FILE TOKENS: decoding speed of the KV-cache decoder on a resident
// model, against the fastest a token could be: one matrix-vector product over every weight of the model
// (all its f32 parameters as one (P / hidden) × hidden matrix, the same BLAS call decoding makes), which
// reads each weight once, as a decoding step must.

import Formats
import Surgery

func benchGenerate(model path: String, promptFile: String, tokens: Int) throws {
  let tokenizer = try Tokenizer.forCheckpoint(path)
  let prompt = tokenizer.encodePrompt(String(decoding: try FileSystem.bytes(promptFile, offset: 0, count: FileSystem.size(promptFile)), as: UTF8.self))
  let model = try LlamaModel.load(path, maxPositions: prompt.count + tokens)
  let decoder = try Decoder(model: model, capacity: prompt.count + tokens)
  var options = GenerationOptions()
  options.maxTokens = tokens
  var bestPrompt = Double.infinity, bestDecode = Double.infinity
  for _ in 0..<2 {
    let r = try Generate.run(decoder, prompt: prompt, options: options)
    bestPrompt = min(bestPrompt, r.promptSeconds)
    bestDecode = min(bestDecode, r.decodeSeconds / Double(r.tokens.count - 1))
  }
  // The floor: every parameter read once by sgemv, best of 5.
  let C = model.config.hiddenSize
  let floats = model.params.layout.entries.reduce(0) { $0 + $1.count }
  let rows = floats / C
  let x = [Float](repeating: 0.5, count: C)
  var y = [Float](repeating: 0, count: rows)
  let sweep = best(5) { Gemm.sgemv(&y, model.params.base, x, rows: rows, cols: C) }
  let gb = Double(rows * C * 4) / 1e9
  say("generate: \(path), prompt \(prompt.count) tokens, \(tokens) greedy tokens, best of 2")
  say("  prompt: \(fixed(Double(prompt.count) / bestPrompt, 1)) tokens/s; decode: \(fixed(bestDecode * 1000, 1)) ms/token = \(fixed(1 / bestDecode, 1)) tokens/s, \(fixed(gb / bestDecode, 2)) GB/s of f32 weights")
  say("  one sgemv over all \(fixed(gb, 3)) GB of weights: \(fixed(sweep * 1000, 1)) ms = \(fixed(gb / sweep, 2)) GB/s; decode step / that floor: \(fixed(bestDecode / sweep, 2))")
}
