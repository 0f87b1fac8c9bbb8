// Writes a pruned model as an HF checkpoint directory: every tensor of the input in its input dtype (or
// `dtype`), pruned projections taken from the model, the input's side files, the method, pattern and
// per-tensor sparsity in the safetensors metadata and in sparsity.json beside the weights.

import Formats

public enum PrunedCheckpoint {
  public static func write(
    _ model: LlamaModel, input: any CheckpointReader, report: PruneReport, method: PruneMethod,
    target: SparsityTarget, dtype: DType?, to output: String, options: ConvertOptions
  ) throws(FormatError) -> [String] {
    let pruned = Set(report.tensors.map(\.name))
    let sources = input.infos.map { info -> TensorSource in
      var out = info
      if let dtype, info.dtype.isFloatingPoint { out.dtype = dtype }
      guard let entry = model.params.layout.entry(info.name) else {
        return TensorSource(info: out, load: {
          let t = try input.tensor(info.name)
          return t.dtype == out.dtype ? t : try t.converted(to: out.dtype)
        }, release: { input.release(info.name) })
      }
      return TensorSource(info: out, load: {
        let values = Array(UnsafeBufferPointer(start: model.params.base + entry.offset, count: entry.count))
        return try Tensor(name: info.name, shape: info.shape, float32: values, as: out.dtype)
      }, release: pruned.contains(info.name) ? nil : { input.release(info.name) })
    }
    let metadata = [
      "format": "pt", "espalier.method": method.rawValue, "espalier.pattern": target.description,
      "espalier.sparsity": String(report.sparsity),
    ]
    var side = try input.sideFiles()
    side.append(SideFile(name: "sparsity.json", content: .text(sparsityJSON(report, method: method, target: target))))
    return try Converter.writeDirectory(sources, sideFiles: side, to: output, options: options, metadata: metadata)
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
