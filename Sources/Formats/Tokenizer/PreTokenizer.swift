// Pre-tokenization for byte-level BPE (formats.md §7): the Digits splitter, the GPT-2 regex of the
// ByteLevel pre-tokenizer, matched by hand over Unicode scalars, and the byte <-> character alphabet.
//
// The regex, in order of its alternatives (the first that matches at a position wins):
//   's|'t|'re|'ve|'m|'ll|'d | ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+
// \s is Unicode White_Space, \p{L} the letter categories, \p{N} the number categories.

struct PreTokenizer {
  var digits = false
  var byteLevel = false

  init(_ json: JSONValue, file: String) throws(FormatError) {
    try add(json, file: file)
  }

  private mutating func add(_ json: JSONValue, file: String) throws(FormatError) {
    guard json != .null else { return }
    guard let o = json.objectValue, let type = o["type"]?.stringValue else {
      throw .io(file: file, reason: "malformed pre_tokenizer")
    }
    switch type {
    case "Sequence":
      for p in o["pretokenizers"]?.arrayValue ?? [] { try add(p, file: file) }
    case "Digits":
      guard o["individual_digits"]?.boolValue == true else {
        throw .io(file: file, reason: "Digits pre-tokenizer without individual_digits is not supported")
      }
      digits = true
    case "ByteLevel":
      guard o["add_prefix_space"]?.boolValue != true, o["use_regex"]?.boolValue != false else {
        throw .io(file: file, reason: "ByteLevel pre-tokenizer with add_prefix_space or without its regex is not supported")
      }
      byteLevel = true
    default:
      throw .io(file: file, reason: "pre-tokenizer `\(type)` is not supported (supported: Sequence, Digits, ByteLevel)")
    }
  }

  /// The words of `text`, each already mapped to the byte-level alphabet.
  func split(_ text: Substring.UnicodeScalarView) -> [String] {
    var pieces: [Substring.UnicodeScalarView] = [text]
    if digits { pieces = pieces.flatMap(Self.isolateDigits) }
    if byteLevel { pieces = pieces.flatMap(Self.regexSplit) }
    return pieces.map(ByteLevel.encode)
  }

  static func isNumber(_ s: Unicode.Scalar) -> Bool {
    switch s.properties.generalCategory {
    case .decimalNumber, .letterNumber, .otherNumber: return true
    default: return false
    }
  }
  static func isLetter(_ s: Unicode.Scalar) -> Bool {
    switch s.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
    default: return false
    }
  }
  static func isSpace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }

  /// Every numeric character becomes a piece of its own; the text between them stays whole.
  static func isolateDigits(_ text: Substring.UnicodeScalarView) -> [Substring.UnicodeScalarView] {
    var out: [Substring.UnicodeScalarView] = []
    var start = text.startIndex
    var i = text.startIndex
    while i < text.endIndex {
      if isNumber(text[i]) {
        if start < i { out.append(text[start..<i]) }
        let next = text.index(after: i)
        out.append(text[i..<next])
        start = next
      }
      i = text.index(after: i)
    }
    if start < text.endIndex { out.append(text[start...]) }
    return out
  }

  /// The GPT-2 regex as a scanner: returns the matches in order (they cover the text).
  static func regexSplit(_ text: Substring.UnicodeScalarView) -> [Substring.UnicodeScalarView] {
    var out: [Substring.UnicodeScalarView] = []
    var i = text.startIndex
    let end = text.endIndex
    func run(from j: Substring.UnicodeScalarView.Index, while predicate: (Unicode.Scalar) -> Bool) -> Substring.UnicodeScalarView.Index {
      var k = j
      while k < end && predicate(text[k]) { k = text.index(after: k) }
      return k
    }
    while i < end {
      let c = text[i]
      let next = text.index(after: i)
      // 's 't 're 've 'm 'll 'd
      if c == "'" && next < end {
        let rest = text[next...]
        if let suffix = ["s", "t", "re", "ve", "m", "ll", "d"].first(where: { rest.starts(with: $0.unicodeScalars) }) {
          let stop = text.index(next, offsetBy: suffix.unicodeScalars.count)
          out.append(text[i..<stop])
          i = stop
          continue
        }
      }
      // ' ?' followed by a run of letters, numbers, or other non-space characters.
      let body = c == " " && next < end ? next : i
      let classes: [(Unicode.Scalar) -> Bool] = [isLetter, isNumber, { !isSpace($0) && !isLetter($0) && !isNumber($0) }]
      if let matched = classes.first(where: { body < end && $0(text[body]) }) {
        let stop = run(from: body, while: matched)
        out.append(text[i..<stop])
        i = stop
        continue
      }
      // \s+(?!\S): a whitespace run, minus its last character when a non-space follows it; else \s+.
      let stop = run(from: i, while: isSpace)
      if stop < end && text.index(after: i) < stop {
        let back = text.index(before: stop)
        out.append(text[i..<back])
        i = back
      } else {
        out.append(text[i..<stop])
        i = stop
      }
    }
    return out
  }
}

/// GPT-2's reversible byte <-> character map: printable bytes map to themselves, the other 68 bytes
/// (0-32, 127-160, 173) to U+0100 + n in increasing order, so every byte string is a printable string.
public enum ByteLevel {
  public static let table: [Unicode.Scalar] = {
    var map = [Unicode.Scalar](repeating: " ", count: 256)
    var n: UInt32 = 0
    for b in 0..<256 {
      if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
        map[b] = Unicode.Scalar(UInt32(b))!
      } else {
        map[b] = Unicode.Scalar(256 + n)!
        n += 1
      }
    }
    return map
  }()

  static let inverse: [UInt32: UInt8] = Dictionary(uniqueKeysWithValues: table.enumerated().map { ($1.value, UInt8($0)) })

  public static func byte(of scalar: Unicode.Scalar) -> UInt8? { inverse[scalar.value] }

  /// The UTF-8 bytes of `text` as byte-level characters.
  static func encode(_ text: Substring.UnicodeScalarView) -> String {
    var out = String.UnicodeScalarView()
    for b in String(text).utf8 { out.append(table[Int(b)]) }
    return String(out)
  }
}
