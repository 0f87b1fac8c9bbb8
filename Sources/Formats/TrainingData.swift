// Fine-tuning data files, read into records (tokenising and packing them is Surgery's Adapt/Data):
//   - a directory: every regular file under it (sorted by path, hidden ones skipped) is one text document;
//   - *.jsonl: one JSON object per line, either {"text": …} or Alpaca {"instruction", "input"?, "output"};
//   - *.json: an array of such objects (the Alpaca release format);
//   - anything else: one plain-text document.

public enum TrainingRecord: Equatable, Sendable {
  /// Free text, trained on every token (packed into windows).
  case text(String)
  /// An Alpaca-style example: the loss covers the output only.
  case instruction(instruction: String, input: String, output: String)
}

public enum TrainingDataFile {
  public static func read(_ path: String) throws(FormatError) -> [TrainingRecord] {
    if FileSystem.isDirectory(path) {
      var files: [String] = []
      try collect(path, into: &files)
      guard !files.isEmpty else { throw .io(file: path, reason: "the directory holds no files") }
      var records: [TrainingRecord] = []
      for file in files.sorted() { records.append(.text(try readText(file))) }
      return records
    }
    if path.hasSuffix(".jsonl") {
      let objects = try JSONLines.read(path)
      var records: [TrainingRecord] = []
      for (i, object) in objects.enumerated() { records.append(try record(object, file: path, what: "line record \(i + 1)")) }
      return records
    }
    if path.hasSuffix(".json") {
      let mapped = try MappedFile(path: path)
      let root: JSONValue
      do { root = try mapped.withBytes { try JSONParser.parse($0) } } catch { throw .io(file: path, reason: "invalid JSON: \(error)") }
      guard let array = root.arrayValue else { throw .io(file: path, reason: "expected a JSON array of records") }
      var records: [TrainingRecord] = []
      for (i, value) in array.enumerated() {
        guard let object = value.objectValue else { throw .io(file: path, reason: "record \(i) is not a JSON object") }
        records.append(try record(object, file: path, what: "record \(i)"))
      }
      return records
    }
    return [.text(try readText(path))]
  }

  static func record(_ object: JSONObject, file: String, what: String) throws(FormatError) -> TrainingRecord {
    if let text = object["text"]?.stringValue { return .text(text) }
    guard let instruction = object["instruction"]?.stringValue, let output = object["output"]?.stringValue else {
      throw .io(file: file, reason: "\(what) has neither a string \"text\" nor string \"instruction\" and \"output\" fields")
    }
    let input = object["input"]?.stringValue ?? ""
    return .instruction(instruction: instruction, input: input, output: output)
  }

  static func readText(_ path: String) throws(FormatError) -> String {
    try MappedFile(path: path).withBytes { String(decoding: $0, as: UTF8.self) }
  }

  static func collect(_ directory: String, into files: inout [String]) throws(FormatError) {
    for name in try FileSystem.list(directory) where !name.hasPrefix(".") {
      let path = directory + "/" + name
      if FileSystem.isDirectory(path) { try collect(path, into: &files) } else { files.append(path) }
    }
  }
}
