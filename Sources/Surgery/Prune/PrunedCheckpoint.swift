// Prunes a model and writes it as an HF checkpoint directory in one pass: every tensor of the input in its
// input dtype (or `dtype`), the input's side files, the method, pattern and per-tensor sparsity in the
// safetensors metadata and in sparsity.json beside the weights. The files are laid out before pruning
// starts (SafetensorsPlacedWriter) and each block's tensors are written as soon as the block is pruned,
// so a streamed model never holds more than one block; everything appears at once when it is done.
// With OWL asked for, its pass over the dense model comes first and sets the per-block rates; the rates
// pruned to (OWL's or a replayed file's) are written beside the weights as layer_sparsity.json.
// Under MPI every rank runs the pruner on its share of the windows, and rank 0 alone writes.

import Formats

public enum PrunedCheckpoint {
  public static func prune(
    _ model: LlamaModel, input: any CheckpointReader, windows: [[Int32]], options: PruneOptions, dtype: DType?, to output: String,
    convert: ConvertOptions, reference: LlamaModel? = nil, prepareBlock: ((Int) throws(SurgeryError) -> Void)? = nil,
    profileProgress: ((Int, Int) -> Void)? = nil, progress: ((Int, Int) -> Void)? = nil
  ) throws(SurgeryError) -> (report: PruneReport, files: [String]) {
    // Under MPI every rank prunes (each on its share of the windows); rank 0 alone writes.
    if options.cluster.isRoot {
      do { try OutputPath.claim(output, overwrite: convert.overwrite, inputs: [input.path]) } catch { throw .format(error) }
    }
    var options = options
    try options.checkProfile()
    if let owl = options.owl {
      let ratios = try OWL.outlierRatios(model, windows: windows, options: options, m: owl.m, progress: profileProgress)
      let rates = try OWL.rates(outlierRatios: ratios, target: options.target.ratio, lambda: owl.lambda)
      options.layerSparsity = LayerSparsity(rates: rates, profile: "owl", target: options.target.ratio, outlierRatios: ratios, settings: owl)
    }
    guard options.cluster.isRoot else {
      return (try Pruner.prune(model, windows: windows, options: options, reference: reference, prepareBlock: prepareBlock, progress: progress), [])
    }
    let infos = input.infos.map { info -> TensorInfo in
      var out = info
      if let dtype, info.dtype.isFloatingPoint { out.dtype = dtype }
      return out
    }
    var byBlock: [Int: [TensorInfo]] = [:]
    var others: [TensorInfo] = []
    for info in infos {
      if let l = blockIndex(info.name), l < model.config.layers { byBlock[l, default: []].append(info) } else { others.append(info) }
    }
    func metadata(sparsity: Double) -> [String: String] {
      ["format": "pt", "espalier.method": options.method.rawValue, "espalier.pattern": options.target.description,
       "espalier.sparsity": String(sparsity)]
    }
    /// A tensor of the input, in the output's dtype.
    func copied(_ info: TensorInfo) throws(FormatError) -> Tensor {
      let t = try input.tensor(info.name)
      return t.dtype == info.dtype ? t : try t.converted(to: info.dtype)
    }
    return try AtomicDirectory.build(output, mapping: SurgeryError.format) { (temporary) throws(SurgeryError) in
      try SurgeryError.wrapping(output) {
        let writer = try SafetensorsPlacedWriter(
          infos, directory: temporary, maxShardSize: convert.maxShardSize, metadata: metadata(sparsity: options.target.ratio))
        // Embedding, head and norms go through in slices: an 8B model's embedding is 1 GB of mapped pages.
        for info in others {
          try writer.put(try input.tensor(info.name)) { input.release(info.name, bytes: $0) }
          input.release(info.name)
        }
        let report = try Pruner.prune(model, windows: windows, options: options, reference: reference, prepareBlock: prepareBlock, blockDone: { (l) throws(SurgeryError) in
          try SurgeryError.wrapping(output) {
            // The block's tensors as the model holds them now (pruned), others straight from the input.
            for info in byBlock[l] ?? [] {
              if let entry = model.params.layout.entry(info.name) {
                try writer.put(try Tensor(
                  name: info.name, shape: info.shape, float32: UnsafeBufferPointer(start: model.params.base + entry.offset, count: entry.count),
                  as: info.dtype))
              } else {
                try writer.put(try copied(info))
              }
              input.release(info.name)
            }
          }
        }, progress: progress)
        var files = try writer.commit(metadata: metadata(sparsity: report.sparsity))
        var side = try input.sideFiles()
        side.append(SideFile(name: "sparsity.json", content: .text(sparsityJSON(report, method: options.method, target: options.target))))
        if let layers = options.layerSparsity {
          side.append(SideFile(name: LayerSparsity.fileName, content: .text(JSONWriter.pretty(layers.json) + "\n")))
        }
        for file in side {
          try file.write(into: temporary)
          files.append(file.name)
        }
        return (report, files)
      }
    }
  }

  /// l of a "model.layers.<l>." tensor name.
  static func blockIndex(_ name: String) -> Int? {
    guard name.hasPrefix("model.layers.") else { return nil }
    return Int(name.dropFirst("model.layers.".count).prefix { $0 != "." })
  }

  static func sparsityJSON(_ report: PruneReport, method: PruneMethod, target: SparsityTarget) -> String {
    var tensors = JSONObject()
    for t in report.tensors {
      tensors[t.name] = .object(JSONObject([
        ("zeros", .number(String(t.zeros))), ("elements", .number(String(t.elements))),
        ("sparsity", .number(String(t.sparsity))),
      ]))
    }
    var pattern: JSONValue = .null
    if case .nm(let p) = target { pattern = .string(p.description) }
    return JSONWriter.pretty(.object(JSONObject([
      ("method", .string(method.rawValue)), ("pattern", pattern), ("target_sparsity", .number(String(target.ratio))),
      ("sparsity", .number(String(report.sparsity))), ("zeros", .number(String(report.zeros))),
      ("elements", .number(String(report.elements))), ("tensors", .object(tensors)),
    ]))) + "\n"
  }
}
