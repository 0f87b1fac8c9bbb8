// Corpus files, the one reader of every text the tools take: calibration (prune), evaluation (eval) and
// fine-tuning data (finetune). Tokenising and packing them is Surgery's job (Adapt/Data, Calibration).
//   - a directory: every regular file under it (sorted by path, hidden ones skipped) is one text document;
//   - *.jsonl: one JSON object per line, either {"text": …} or Alpaca {"instruction", "input"?, "output"};
//   - *.json: an array of such objects (the Alpaca release format);
//   - anything else: one plain-text document.
// Multiple-choice items for eval ({"context", "choices", "label"} per JSONL line) are read here too.

public enum TrainingRecord: Equatable, Sendable {
  /// Free text, trained on every token (packed into windows).
  case text(String)
  /// An Alpaca-style example: the loss covers the output only.
  case instruction(instruction: String, input: String, output: String)
}

public enum Corpus {
  /// The records of a corpus file or directory.
  public static func records(_ path: String) throws(FormatError) -> [TrainingRecord] {
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
      guard let array = try JSONFile.read(path).arrayValue else { throw .io(file: path, reason: "expected a JSON array of records") }
      var records: [TrainingRecord] = []
      for (i, value) in array.enumerated() {
        guard let object = value.objectValue else { throw .io(file: path, reason: "record \(i) is not a JSON object") }
        records.append(try record(object, file: path, what: "record \(i)"))
      }
      return records
    }
    return [.text(try readText(path))]
  }

  /// The corpus as one text: documents joined by blank lines (an Alpaca example reads as its
  /// instruction, input and output), for calibration and perplexity.
  public static func text(_ path: String) throws(FormatError) -> String {
    try records(path).map { record in
      switch record {
      case .text(let text): return text
      case .instruction(let instruction, let input, let output): return [instruction, input, output].filter { !$0.isEmpty }.joined(separator: "\n\n")
      }
    }.joined(separator: "\n\n")
  }

  /// Multiple-choice items: one {"context": string, "choices": [string], "label": index} per JSONL line.
  public static func choices(_ path: String) throws(FormatError) -> [ChoiceItem] {
    var items: [ChoiceItem] = []
    for (i, o) in try JSONLines.read(path).enumerated() {
      guard let context = o["context"]?.stringValue, let choices = o["choices"]?.arrayValue?.compactMap(\.stringValue),
        !choices.isEmpty, let label = o["label"]?.intValue, label >= 0, label < choices.count
      else {
        throw .io(file: path, reason: "line \(i + 1) needs context (string), choices (strings) and label (an index into choices)")
      }
      items.append(ChoiceItem(context: context, choices: choices, label: label))
    }
    return items
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

/// A multiple-choice item: the choice whose tokens are likeliest after the context should be `label`.
public struct ChoiceItem: Sendable {
  public var context: String
  public var choices: [String]
  public var label: Int

  public init(context: String, choices: [String], label: Int) {
    self.context = context
    self.choices = choices
    self.label = label
  }
}
