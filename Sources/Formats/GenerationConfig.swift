// generation_config.json beside a checkpoint: the end-of-sequence tokens generation stops at. Instruct
// models often list more there than config.json does (Llama 3: <|eot_id|> and <|eom_id|> as well).

public enum GenerationConfig {
  /// config.json's eos_token_id (a GGUF's tokenizer.ggml.eos_token_id), plus generation_config.json's
  /// when the checkpoint is a directory that has one (an id or a list of ids).
  public static func eosTokenIDs(_ path: String, config: LlamaConfig) throws(FormatError) -> [Int] {
    var ids = config.eosTokenIDs
    let file = (path.hasSuffix("/") ? path : path + "/") + "generation_config.json"
    guard FileSystem.isDirectory(path), FileSystem.exists(file) else { return ids }
    guard let object = try JSONFile.read(file).objectValue else { throw .io(file: file, reason: "not a JSON object") }
    let value = object["eos_token_id"]
    let listed = value?.arrayValue?.compactMap(\.intValue) ?? value?.intValue.map { [$0] } ?? []
    for id in listed where id < 0 || id >= config.vocabSize {
      throw .io(file: file, reason: "eos_token_id \(id) is outside the vocabulary (\(config.vocabSize) tokens)")
    }
    for id in listed where !ids.contains(id) { ids.append(id) }
    return ids
  }
}
