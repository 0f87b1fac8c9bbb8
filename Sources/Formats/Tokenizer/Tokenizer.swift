// Byte-level BPE from a HF tokenizer.json (GPT-2 / SmolLM2 style, formats.md §7), giving the ids the
// `tokenizers` package gives. Pipeline: split out added tokens (matched in the raw text) -> pre-tokenize
// (Digits, ByteLevel regex; see PreTokenizer.swift) -> map bytes to the byte-level alphabet -> BPE by
// merge rank, leftmost pair first on ties -> ids. Decoding maps the alphabet back to bytes and decodes
// UTF-8 with replacement characters, as the ByteLevel decoder does.

public final class Tokenizer: @unchecked Sendable {
  public struct AddedToken: Equatable, Sendable {
    public var id: Int32
    public var content: String
    public var special: Bool
  }

  public let vocab: [String: Int32]
  public let idToToken: [String]
  public let addedTokens: [AddedToken]
  /// For each mergeable pair: its rank (lower merges first) and the id of the merged token.
  let merges: [MergePair: (rank: Int32, result: Int32)]
  let preTokenizer: PreTokenizer
  let ignoreMerges: Bool
  /// Tokens the model expects before a prompt (a BOS), from tokenizer.json's TemplateProcessing post-processor
  /// or tokenizer_config.json's add_bos_token; `encode` never adds them (perplexity windows do not start a
  /// document), `encodePrompt` does.
  public internal(set) var promptPrefix: [Int32] = []
  private var cache: [String: [Int32]] = [:]
  private let cacheLimit = 100_000

  public var vocabSize: Int { idToToken.count }

  struct MergePair: Hashable {
    let left: Int32
    let right: Int32
  }

  /// Reads tokenizer.json (a file, or the one inside a checkpoint directory).
  public convenience init(contentsOf path: String) throws(FormatError) {
    let file = FileSystem.isDirectory(path) ? (path.hasSuffix("/") ? path : path + "/") + "tokenizer.json" : path
    guard FileSystem.exists(file) else { throw .io(file: file, reason: "no tokenizer.json") }
    try self.init(json: try JSONFile.read(file), file: file)
  }

  public init(json root: JSONValue, file: String) throws(FormatError) {
    func fail(_ why: String) -> FormatError { .io(file: file, reason: why) }
    guard let object = root.objectValue, let model = object["model"]?.objectValue else { throw fail("no `model` object") }
    guard model["type"]?.stringValue == "BPE" else { throw fail("model type `\(model["type"]?.stringValue ?? "?")` is not BPE") }
    guard object["normalizer"] == nil || object["normalizer"] == .null else {
      throw fail("normalizers are not supported (this tokenizer has one)")
    }
    guard let vocabObject = model["vocab"]?.objectValue else { throw fail("no vocab") }
    var vocab: [String: Int32] = [:]
    var size = 0
    // Ids index the token table: each must fit Int32 and lie below the number of entries (a table sized
    // by one forged id would be allocated whole).
    let entries = vocabObject.keys.count + (object["added_tokens"]?.arrayValue?.count ?? 0)
    func checked(_ id: Int, _ token: String) throws(FormatError) -> Int {
      guard id < entries, id < Int(Int32.max) else { throw fail("token `\(token.prefix(40))` has id \(id), beyond the \(entries) entries of the vocabulary") }
      return id
    }
    for token in vocabObject.keys {
      guard let raw = vocabObject[token]!.intValue else { throw fail("vocab id of `\(token)` is not an integer") }
      let id = try checked(raw, token)
      vocab[token] = Int32(id)
      size = max(size, id + 1)
    }
    var added: [AddedToken] = []
    for entry in object["added_tokens"]?.arrayValue ?? [] {
      guard let e = entry.objectValue, let raw = e["id"]?.intValue, let content = e["content"]?.stringValue else {
        throw fail("malformed added token")
      }
      let id = try checked(raw, content)
      guard !content.isEmpty else { throw fail("added token \(id) is empty (it would match everywhere)") }
      added.append(AddedToken(id: Int32(id), content: content, special: e["special"]?.boolValue ?? false))
      vocab[content] = Int32(id)
      size = max(size, id + 1)
    }
    var names = [String](repeating: "", count: size)
    for (token, id) in vocab { names[Int(id)] = token }

    var ranks: [MergePair: (rank: Int32, result: Int32)] = [:]
    for (rank, merge) in (model["merges"]?.arrayValue ?? []).enumerated() {
      let parts: [String]
      if let pair = merge.arrayValue?.compactMap(\.stringValue), pair.count == 2 {
        parts = pair
      } else if let line = merge.stringValue {
        if line.hasPrefix("#version") { continue }
        parts = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 else { throw fail("bad merge `\(line)`") }
      } else {
        throw fail("bad merge at rank \(rank)")
      }
      guard let l = vocab[parts[0]], let r = vocab[parts[1]], let result = vocab[parts[0] + parts[1]] else {
        throw fail("merge `\(parts[0]) \(parts[1])` uses a token missing from the vocab")
      }
      if ranks[MergePair(left: l, right: r)] == nil { ranks[MergePair(left: l, right: r)] = (Int32(rank), result) }
    }
    self.vocab = vocab
    idToToken = names
    // Longest first, so a special token that is a prefix of another never wins.
    addedTokens = added.sorted { $0.content.utf8.count > $1.content.utf8.count }
    merges = ranks
    preTokenizer = try PreTokenizer(object["pre_tokenizer"] ?? .null, file: file)
    ignoreMerges = model["ignore_merges"]?.boolValue ?? false
    promptPrefix = Self.templatePrefix(object["post_processor"], vocab: vocab)
  }

  /// The special tokens a TemplateProcessing post-processor puts before a single sequence (`$A`), also
  /// inside a Sequence of processors.
  static func templatePrefix(_ processor: JSONValue?, vocab: [String: Int32]) -> [Int32] {
    guard let p = processor?.objectValue else { return [] }
    if p["type"]?.stringValue == "Sequence" {
      for inner in p["processors"]?.arrayValue ?? [] {
        let prefix = templatePrefix(inner, vocab: vocab)
        if !prefix.isEmpty { return prefix }
      }
      return []
    }
    guard p["type"]?.stringValue == "TemplateProcessing" else { return [] }
    var prefix: [Int32] = []
    for piece in p["single"]?.arrayValue ?? [] {
      guard let special = piece.objectValue?["SpecialToken"]?.objectValue, let name = special["id"]?.stringValue else { break }
      let ids = p["special_tokens"]?.objectValue?[name]?.objectValue?["ids"]?.arrayValue?.compactMap(\.intValue).map(Int32.init)
      guard let ids = ids ?? vocab[name].map({ [$0] }) else { break }
      prefix += ids
    }
    return prefix
  }

  /// The ids of a prompt: `promptPrefix`, then `encode(text)`.
  public func encodePrompt(_ text: String) -> [Int32] { promptPrefix + encode(text) }

  public func id(of token: String) -> Int32? { vocab[token] }

  // MARK: Encoding

  /// The ids of `text`, added tokens included where they appear (no BOS/EOS is added).
  public func encode(_ text: String) -> [Int32] {
    var ids: [Int32] = []
    for segment in splitAddedTokens(text) {
      switch segment {
      case .added(let id): ids.append(id)
      case .text(let piece):
        for word in preTokenizer.split(piece) { ids += encodeWord(word) }
      }
    }
    return ids
  }

  enum Segment {
    case text(Substring.UnicodeScalarView)
    case added(Int32)
  }

  /// Splits out added tokens, matched literally in the raw text, leftmost first and longest at a position.
  func splitAddedTokens(_ text: String) -> [Segment] {
    let scalars = text.unicodeScalars
    guard !addedTokens.isEmpty else { return [.text(Substring(text).unicodeScalars)] }
    var segments: [Segment] = []
    var start = scalars.startIndex
    var i = scalars.startIndex
    while i < scalars.endIndex {
      if let token = addedTokens.first(where: { scalars[i...].starts(with: $0.content.unicodeScalars) }) {
        if start < i { segments.append(.text(Substring(text).unicodeScalars[start..<i])) }
        segments.append(.added(token.id))
        i = scalars.index(i, offsetBy: token.content.unicodeScalars.count)
        start = i
      } else {
        i = scalars.index(after: i)
      }
    }
    if start < scalars.endIndex { segments.append(.text(Substring(text).unicodeScalars[start...])) }
    return segments
  }

  /// BPE of one pre-tokenized word (already in the byte-level alphabet).
  func encodeWord(_ word: String) -> [Int32] {
    if let hit = cache[word] { return hit }
    if ignoreMerges, let id = vocab[word] { return [id] }
    // Characters missing from the vocab (and no unk token) are dropped before merging, as `tokenizers`
    // does, so their neighbours may merge across them.
    var symbols = word.unicodeScalars.compactMap { vocab[String($0)] }
    while symbols.count > 1 {
      var best = Int32.max
      var at = -1
      var result: Int32 = -1
      for i in 0..<(symbols.count - 1) {
        if let m = merges[MergePair(left: symbols[i], right: symbols[i + 1])], m.rank < best {
          (best, at, result) = (m.rank, i, m.result)
        }
      }
      guard at >= 0 else { break }
      symbols[at] = result
      symbols.remove(at: at + 1)
    }
    if cache.count < cacheLimit { cache[word] = symbols }
    return symbols
  }

  // MARK: Decoding

  /// Text of `ids`: added tokens as their content (unless skipped), the rest mapped back to bytes and
  /// decoded as UTF-8 with U+FFFD for invalid sequences.
  public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) -> String {
    var bytes: [UInt8] = []
    var out = ""
    func flush() {
      out += String(decoding: bytes, as: UTF8.self)
      bytes.removeAll(keepingCapacity: true)
    }
    for id in ids {
      guard id >= 0, Int(id) < idToToken.count else { continue }
      if let added = addedTokens.first(where: { $0.id == id }) {
        if skipSpecialTokens && added.special { continue }
        flush()
        out += added.content
        continue
      }
      for scalar in idToToken[Int(id)].unicodeScalars {
        if let b = ByteLevel.byte(of: scalar) { bytes.append(b) }
      }
    }
    flush()
    return out
  }
}

extension Tokenizer {
  /// The tokenizer that belongs to a checkpoint: tokenizer.json beside the weights, or one made from a
  /// GGUF file's metadata.
  public static func forCheckpoint(_ path: String) throws(FormatError) -> Tokenizer {
    if !FileSystem.isDirectory(path), try Checkpoint.kind(ofFile: path) == .gguf {
      let files = try GGUFTokenizer.files(try GGUFFile(path: path), contextLength: 0)
      do {
        let tokenizer = try Tokenizer(json: try JSONParser.parse(Array(files.tokenizerJSON.utf8)), file: path)
        tokenizer.addBOS(from: try JSONParser.parse(Array(files.tokenizerConfigJSON.utf8)))
        return tokenizer
      } catch let e as FormatError {
        throw e
      } catch { throw .io(file: path, reason: "\(error)") }
    }
    let directory = FileSystem.isDirectory(path) ? path : (path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ".")
    let tokenizer = try Tokenizer(contentsOf: directory)
    let config = directory + "/tokenizer_config.json"
    if FileSystem.exists(config) { tokenizer.addBOS(from: try JSONFile.read(config)) }
    return tokenizer
  }

  /// tokenizer_config.json's `add_bos_token: true` with its `bos_token` (a string or {"content": …}) makes
  /// that token the prompt prefix, unless the post-processor already gives one.
  func addBOS(from config: JSONValue) {
    guard promptPrefix.isEmpty, let o = config.objectValue, o["add_bos_token"]?.boolValue == true else { return }
    let bos = o["bos_token"]?.stringValue ?? o["bos_token"]?.objectValue?["content"]?.stringValue
    if let bos, let id = vocab[bos] { promptPrefix = [id] }
  }
}
