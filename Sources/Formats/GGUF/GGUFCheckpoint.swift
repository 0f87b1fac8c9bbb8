// A GGUF file seen as an HF checkpoint: HF names, torch shapes, quantised tensors dequantised to f32,
// plain F32/F16/BF16 tensors kept in their dtype, the Q/K row permutation undone, and config and
// tokenizer files generated from the metadata.

public final class GGUFCheckpoint: CheckpointReader, @unchecked Sendable {
  public let file: GGUFFile
  public let config: LlamaConfig
  public let infos: [TensorInfo]
  /// Things a user should know: GGUF tensors with no HF counterpart, a tokenizer we could not express.
  public private(set) var notes: [String] = []
  private let byName: [String: (gguf: GGUFTensorInfo, heads: Int?)]

  public var path: String { file.path }

  public init(path: String) throws(FormatError) {
    file = try GGUFFile(path: path)
    let p = try GGUFLlama.config(file)
    config = p
    var infos: [TensorInfo] = []
    var byName: [String: (GGUFTensorInfo, Int?)] = [:]
    for t in file.tensors {
      guard let name = LlamaNames.hfName(gguf: t.name) else {
        notes.append("skipped `\(t.name)`: HF checkpoints do not store it")
        continue
      }
      infos.append(TensorInfo(name: name, dtype: t.type.elementType ?? .f32, shape: t.torchShape))
      byName[name] = (t, LlamaNames.permutationHeads(hfName: name, heads: p.heads, kvHeads: p.kvHeads))
    }
    self.infos = infos
    self.byName = byName
    // The metadata must describe the tensors the file holds (a converted checkpoint carries it as config.json),
    // and the vocabulary must have one token per embedding row (llama.cpp requires the same).
    try p.checkTensors(infos, file: path, configFile: path)
    if let tokens = file.metadata["tokenizer.ggml.tokens"]?.arrayValue, tokens.count != p.vocabSize {
      throw .io(file: path, reason: "`tokenizer.ggml.tokens` holds \(tokens.count) tokens, the embedding has \(p.vocabSize) rows")
    }
  }

  public func tensor(_ name: String) throws(FormatError) -> Tensor {
    guard let (g, heads) = byName[name] else { throw .tensorNotFound(file: path, tensor: name) }
    let info = TensorInfo(name: name, dtype: g.type.elementType ?? .f32, shape: g.torchShape)
    let stored: Tensor
    if g.type.elementType != nil {
      stored = try Tensor(info: info, bytes: file.rawBytes(g), owner: file)
    } else {
      stored = try file.dequantized(g, as: name)
    }
    guard let heads, let rows = info.shape.first, rows > 0 else { return stored }
    let storage = try OwnedBytes.allocate(stored.byteCount, file: path, what: "tensor `\(name)`")
    try stored.withUnsafeBytes { (b) throws(FormatError) in
      try QKPermutation.unpermute(b.baseAddress!, into: storage.pointer, rows: rows, rowBytes: b.count / rows, heads: heads)
    }
    return try Tensor(info: info, bytes: storage.bytes, owner: storage)
  }

  /// `tensor` (an HF tensor of a name this file holds, from another checkpoint) as this file stores it:
  /// encoded in this file's ggml type for that tensor, as `espalier convert … .gguf` encodes it, and decoded
  /// again as `tensor(_:)` decodes. What an export of `tensor` would read back as, so a GGUF can be checked
  /// bit for bit against the checkpoint it came from. nil when the name is absent, `tensor` is not float,
  /// or the type is one we do not write (llama.cpp's K-quants, Q4_1).
  public func asStored(_ tensor: Tensor) throws(FormatError) -> Tensor? {
    guard let (g, _) = byName[tensor.name], GGUFQuantize.outputTypes.contains(g.type), tensor.dtype.isFloatingPoint,
      tensor.dtype.convertsToFloat32, tensor.shape == g.torchShape
    else { return nil }
    let values = try tensor.float32()
    let bytes = values.count / g.type.blockSize * g.type.typeSize
    let encoded = try OwnedBytes.allocate(bytes, file: path, what: "tensor `\(tensor.name)` as \(g.type.name)")
    _ = values.withUnsafeBufferPointer { GGUFQuantize.quantize(g.type, $0.baseAddress!, count: values.count, into: encoded.pointer) }
    let raw = UnsafeRawBufferPointer(start: encoded.pointer, count: bytes)
    if let dtype = g.type.elementType {
      return try Tensor(info: TensorInfo(name: tensor.name, dtype: dtype, shape: tensor.shape), bytes: raw, owner: encoded)
    }
    var decoded = [Float](repeating: 0, count: values.count)
    _ = decoded.withUnsafeMutableBufferPointer { GGUFQuants.dequantize(g.type, from: raw, to: $0.baseAddress!, count: values.count) }
    return try Tensor(name: tensor.name, shape: tensor.shape, float32: decoded)
  }

  public func release(_ name: String) { if let (g, _) = byName[name] { file.release(g) } }

  public func sideFiles() throws(FormatError) -> [SideFile] {
    var files = [
      SideFile(name: "config.json", content: .text(GGUFLlama.configJSON(config))),
      SideFile(name: "generation_config.json", content: .text(GGUFLlama.generationConfigJSON(config))),
    ]
    do {
      let tokenizer = try GGUFTokenizer.files(file, contextLength: config.maxPositionEmbeddings)
      files.append(SideFile(name: "tokenizer.json", content: .text(tokenizer.tokenizerJSON)))
      files.append(SideFile(name: "tokenizer_config.json", content: .text(tokenizer.tokenizerConfigJSON)))
    } catch {
      notes.append("no tokenizer files written: \(error)")
    }
    return files
  }
}
