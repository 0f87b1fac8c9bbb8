// An HF Llama checkpoint -> a GGUF file llama.cpp loads (formats.md §4.4-4.6), the way llama.cpp's
// convert_hf_to_gguf.py writes one: HF names to GGUF names, dims reversed, the Q/K rows permuted into
// RoPE pairs, `lm_head` left out when tied, norms and other 1-D tensors in F32 and the 2-D weights in
// the requested type; the hyperparameters as `llama.*` keys and the tokenizer (byte-level BPE) as
// `tokenizer.ggml.*` keys with the chat template. Pruned zeros survive every type (GGUFQuantize);
// kept weights that would have become zero are nudged and counted. One tensor is resident at a time.

public struct GGUFExportReport: Sendable {
  public var tensors = 0
  public var bytesOut = 0
  /// Kept weights moved off zero, per GGUF tensor name (only tensors that had any).
  public var nudged: [String: Int] = [:]
  public var notes: [String] = []
  public var nudgedTotal: Int { nudged.values.reduce(0, +) }
}

public enum GGUFExport {
  /// `general.file_type` of each output type (llama_ftype).
  static func fileType(_ type: GGMLType) -> UInt32 {
    switch type.id {
    case GGMLType.f32.id: return 0
    case GGMLType.f16.id: return 1
    case GGMLType.q4_0.id: return 2
    case GGMLType.q8_0.id: return 7
    case GGMLType.q6_K.id: return 18
    case GGMLType.bf16.id: return 32
    default: return 0
    }
  }

  /// The type a tensor is written in: 1-D tensors and norms in F32 (as the converter does), 2-D weights
  /// in `requested` when their rows are whole blocks of it; otherwise Q6_K falls back to Q8_0 (as
  /// llama-quantize does) and anything else to F16, with a note. For a quantized request the output
  /// projection (`output.weight`, or `token_embd.weight` when the embedding is tied and serves as the
  /// head) takes llama-quantize's output type instead: Q8_0 when Q8_0 was asked for or its rows are not
  /// whole blocks of the requested type, else Q6_K (then Q6_K's own fallback). A 4-bit head ruins small
  /// models: SmolLM2 at Q4_0 everywhere had perplexity in the thousands.
  static func tensorType(ggufName: String, shape: [Int], requested: GGMLType, outputProjection: Bool = false) -> (GGMLType, note: String?) {
    if shape.count < 2 || ggufName.hasSuffix("_norm.weight") { return (.f32, nil) }
    let ne0 = shape.last ?? 1
    var target = requested
    if outputProjection && requested.elementType == nil {
      target = requested == .q8_0 || ne0 % requested.blockSize != 0 ? .q8_0 : .q6_K
    }
    guard ne0 % target.blockSize == 0 else {
      let fallback: GGMLType = target == .q6_K && ne0 % GGMLType.q8_0.blockSize == 0 ? .q8_0 : .f16
      return (fallback, "`\(ggufName)`: rows of \(ne0) are not whole \(target.name) blocks of \(target.blockSize); written as \(fallback.name)")
    }
    return (target, target == requested ? nil : "`\(ggufName)`: the output projection, written as \(target.name) (llama-quantize's choice)")
  }

  public static func export(
    _ reader: any CheckpointReader, to path: String, type requested: GGMLType,
    progress: ((_ done: Int, _ total: Int) -> Void)? = nil
  ) throws(FormatError) -> GGUFExportReport {
    guard GGUFQuantize.outputTypes.contains(requested) else {
      throw .io(file: path, reason: "GGUF output type \(requested.name) is not one we write (\(GGUFQuantize.outputTypes.map(\.name).joined(separator: ", ")))")
    }
    let sideFiles = try reader.sideFiles()
    let configJSON = try jsonObject(sideFiles, "config.json", checkpoint: reader.path)
    if let configJSON, let type = configJSON["model_type"]?.stringValue, type != "llama" {
      throw .unsupportedArchitecture(file: reader.path, architecture: "\(type) (GGUF output writes the llama architecture only)")
    }
    let config = try LlamaConfig.of(reader)
    guard config.ropeScaling == nil else {
      throw .io(file: reader.path, reason: "rope_scaling `\(config.ropeScaling!.type)`: GGUF output does not write RoPE scaling yet")
    }
    var report = GGUFExportReport()
    var metadata: [(key: String, value: GGUFValue)] = [("general.architecture", .string("llama"))]
    let name = FileSystem.checkpointDirectory(of: reader.path).split(separator: "/").last.map(String.init) ?? "model"
    metadata.append(("general.name", .string(name)))
    metadata += llamaMetadata(config)
    metadata.append(("general.file_type", .uint32(fileType(requested))))
    if requested.elementType == nil { metadata.append(("general.quantization_version", .uint32(2))) }
    let (tokenizer, tokenizerNotes) = try tokenizerMetadata(sideFiles, config: config, checkpoint: reader.path)
    metadata += tokenizer
    report.notes += tokenizerNotes

    var tensors: [GGUFTensorOut] = []
    var done = 0
    let total = reader.infos.count
    for info in reader.infos {
      guard let ggufName = LlamaNames.ggufName(hf: info.name) else {
        report.notes.append("skipped `\(info.name)`: GGUF has no name for it")
        continue
      }
      if ggufName == "output.weight" && config.tieWordEmbeddings {
        report.notes.append("skipped `lm_head.weight`: tied to the embedding (llama.cpp reads token_embd)")
        continue
      }
      guard info.dtype.isFloatingPoint, info.dtype.convertsToFloat32 else {
        throw .io(file: reader.path, reason: "tensor `\(info.name)` is \(info.dtype.rawValue); GGUF output takes float tensors")
      }
      let head = ggufName == "output.weight" || (ggufName == "token_embd.weight" && config.tieWordEmbeddings)
      let (type, note) = tensorType(ggufName: ggufName, shape: info.shape, requested: requested, outputProjection: head)
      if let note { report.notes.append(note) }
      let heads = LlamaNames.permutationHeads(hfName: info.name, heads: config.heads, kvHeads: config.kvHeads)
      tensors.append(GGUFTensorOut(name: ggufName, dims: info.shape.reversed(), type: type) { (emit) throws(FormatError) in
        let tensor = try reader.tensor(info.name)
        let f32 = tensor.dtype == .f32 ? tensor : try tensor.converted(to: .f32)
        let count = info.shape.reduce(1, *)
        let rows = info.shape.count >= 2 ? info.shape[0] : 1
        try f32.withUnsafeBytes { (source) throws(FormatError) in
          var values = source
          var permuted: OwnedBytes?
          if let heads, rows > 0 {
            let storage = try OwnedBytes.allocate(source.count, file: reader.path, what: "tensor `\(info.name)` permuted")
            try QKPermutation.permute(source.baseAddress!, into: storage.pointer, rows: rows, rowBytes: source.count / rows, heads: heads)
            permuted = storage
            values = UnsafeRawBufferPointer(start: storage.pointer, count: source.count)
          }
          let outBytes = count / type.blockSize * type.typeSize
          let out = try OwnedBytes.allocate(outBytes, file: path, what: "tensor `\(ggufName)` as \(type.name)")
          let counts = GGUFQuantize.quantize(
            type, values.baseAddress!.assumingMemoryBound(to: Float.self), count: count, into: out.pointer)
          if counts.nudged > 0 { report.nudged[ggufName] = counts.nudged }
          try emit(UnsafeRawBufferPointer(start: out.pointer, count: outBytes))
          withExtendedLifetime(permuted) {}
        }
        reader.release(info.name)
        done += 1
        progress?(done, total)
      })
    }
    try GGUFWriter.write(metadata: metadata, tensors: tensors, to: path)
    report.tensors = tensors.count
    report.bytesOut = FileSystem.size(path)
    return report
  }

  static func jsonObject(_ sides: [SideFile], _ name: String, checkpoint: String) throws(FormatError) -> JSONObject? {
    guard let side = sides.first(where: { $0.name == name }) else { return nil }
    do {
      guard let object = try JSONParser.parse(Array(try side.text().utf8)).objectValue else {
        throw FormatError.io(file: checkpoint, reason: "\(name) is not a JSON object")
      }
      return object
    } catch let e as FormatError {
      throw e
    } catch {
      throw .io(file: checkpoint, reason: "\(name): \(error)")
    }
  }

  /// The `llama.*` keys, with the value types gguf-py writes (formats.md §4.4).
  static func llamaMetadata(_ c: LlamaConfig) -> [(key: String, value: GGUFValue)] {
    var m: [(key: String, value: GGUFValue)] = [
      ("llama.vocab_size", .uint32(UInt32(c.vocabSize))),
      ("llama.context_length", .uint32(UInt32(c.maxPositionEmbeddings))),
      ("llama.embedding_length", .uint32(UInt32(c.hiddenSize))),
      ("llama.block_count", .uint32(UInt32(c.layers))),
      ("llama.feed_forward_length", .uint32(UInt32(c.intermediateSize))),
      ("llama.attention.head_count", .uint32(UInt32(c.heads))),
      ("llama.attention.head_count_kv", .uint32(UInt32(c.kvHeads))),
      ("llama.rope.freq_base", .float32(Float(c.ropeTheta))),
      ("llama.attention.layer_norm_rms_epsilon", .float32(Float(c.rmsNormEps))),
      ("llama.rope.dimension_count", .uint32(UInt32(c.headDim))),
    ]
    if c.heads > 0 && c.headDim * c.heads != c.hiddenSize {
      m.append(("llama.attention.key_length", .uint32(UInt32(c.headDim))))
      m.append(("llama.attention.value_length", .uint32(UInt32(c.headDim))))
    }
    return m
  }
}
