// A strict JSON reader and two writers for the headers and side files of checkpoints.
//
// Why not JSONDecoder: it silently accepts duplicate keys and loses key order, and safetensors must reject
// the first and the writer must reproduce the second. Numbers are kept as their source text so that a
// u64 offset never passes through a Double. Nesting is bounded so hostile input cannot exhaust the stack.

public struct JSONObject: Equatable, Sendable {
  /// Keys in file order.
  public private(set) var keys: [String] = []
  public private(set) var values: [String: JSONValue] = [:]

  public init() {}
  public init(_ pairs: [(String, JSONValue)]) { for (k, v) in pairs { self[k] = v } }

  public subscript(key: String) -> JSONValue? {
    get { values[key] }
    set {
      if values[key] == nil, newValue != nil { keys.append(key) }
      if newValue == nil { keys.removeAll { $0 == key } }
      values[key] = newValue
    }
  }
  public var count: Int { keys.count }
}

public indirect enum JSONValue: Equatable, Sendable {
  case null
  case bool(Bool)
  /// The number exactly as written (validated against the JSON grammar).
  case number(String)
  case string(String)
  case array([JSONValue])
  case object(JSONObject)

  public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
  public var objectValue: JSONObject? { if case .object(let o) = self { return o } else { return nil } }
  public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
  public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
  /// The value as a non-negative integer, or nil for negatives, fractions, exponents and overflow.
  public var uint64Value: UInt64? {
    guard case .number(let text) = self, !text.isEmpty, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
    return UInt64(text)
  }
  public var intValue: Int? { uint64Value.flatMap { $0 <= UInt64(Int.max) ? Int($0) : nil } }
  public var doubleValue: Double? { if case .number(let t) = self { return Double(t) } else { return nil } }
}

public enum JSONParseError: Error, Equatable, Sendable, CustomStringConvertible {
  case syntax(String, offset: Int)
  case duplicateKey(String)
  public var description: String {
    switch self {
    case .syntax(let m, let o): return "\(m) at byte \(o)"
    case .duplicateKey(let k): return "duplicate key `\(k)`"
    }
  }
}

public struct JSONParser {
  private let bytes: UnsafeRawBufferPointer
  private var position = 0
  private let maxDepth: Int

  /// Parses exactly one JSON value surrounded by optional whitespace (space, tab, CR, LF).
  public static func parse(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = 64) throws(JSONParseError) -> JSONValue {
    var parser = JSONParser(bytes: bytes, maxDepth: maxDepth)
    parser.skipWhitespace()
    let value = try parser.parseValue(depth: 0)
    parser.skipWhitespace()
    guard parser.position == bytes.count else { throw .syntax("trailing characters", offset: parser.position) }
    return value
  }

  public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
    do { return try bytes.withUnsafeBytes { try parse($0) } } catch let e as JSONParseError { throw e } catch {
      throw .syntax("\(error)", offset: 0)
    }
  }

  private init(bytes: UnsafeRawBufferPointer, maxDepth: Int) {
    self.bytes = bytes
    self.maxDepth = maxDepth
  }

  private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

  private mutating func skipWhitespace() {
    while let c = current, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { position += 1 }
  }

  private mutating func expect(_ literal: StaticString) throws(JSONParseError) {
    let start = position
    for byte in UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount) {
      guard current == byte else { throw .syntax("invalid literal", offset: start) }
      position += 1
    }
  }

  private mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
    guard depth < maxDepth else { throw .syntax("nesting deeper than \(maxDepth)", offset: position) }
    guard let c = current else { throw .syntax("unexpected end of input", offset: position) }
    switch c {
    case UInt8(ascii: "{"): return .object(try parseObject(depth: depth))
    case UInt8(ascii: "["): return .array(try parseArray(depth: depth))
    case UInt8(ascii: "\""): return .string(try parseString())
    case UInt8(ascii: "t"): try expect("true"); return .bool(true)
    case UInt8(ascii: "f"): try expect("false"); return .bool(false)
    case UInt8(ascii: "n"): try expect("null"); return .null
    case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
    default: throw .syntax("unexpected character", offset: position)
    }
  }

  private mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONObject {
    position += 1
    var object = JSONObject()
    skipWhitespace()
    if current == UInt8(ascii: "}") { position += 1; return object }
    while true {
      skipWhitespace()
      guard current == UInt8(ascii: "\"") else { throw .syntax("expected a string key", offset: position) }
      let key = try parseString()
      if object[key] != nil { throw .duplicateKey(key) }
      skipWhitespace()
      guard current == UInt8(ascii: ":") else { throw .syntax("expected ':'", offset: position) }
      position += 1
      skipWhitespace()
      object[key] = try parseValue(depth: depth + 1)
      skipWhitespace()
      switch current {
      case UInt8(ascii: ","): position += 1
      case UInt8(ascii: "}"): position += 1; return object
      default: throw .syntax("expected ',' or '}'", offset: position)
      }
    }
  }

  private mutating func parseArray(depth: Int) throws(JSONParseError) -> [JSONValue] {
    position += 1
    var array: [JSONValue] = []
    skipWhitespace()
    if current == UInt8(ascii: "]") { position += 1; return array }
    while true {
      skipWhitespace()
      array.append(try parseValue(depth: depth + 1))
      skipWhitespace()
      switch current {
      case UInt8(ascii: ","): position += 1
      case UInt8(ascii: "]"): position += 1; return array
      default: throw .syntax("expected ',' or ']'", offset: position)
      }
    }
  }

  private mutating func parseNumber() throws(JSONParseError) -> String {
    let start = position
    func digits(_ p: inout JSONParser) -> Int {
      var n = 0
      while let c = p.current, c >= 48 && c <= 57 { p.position += 1; n += 1 }
      return n
    }
    if current == UInt8(ascii: "-") { position += 1 }
    if current == UInt8(ascii: "0") {
      position += 1
    } else if digits(&self) == 0 {
      throw .syntax("invalid number", offset: start)
    }
    if current == UInt8(ascii: ".") {
      position += 1
      guard digits(&self) > 0 else { throw .syntax("invalid number", offset: start) }
    }
    if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
      position += 1
      if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
      guard digits(&self) > 0 else { throw .syntax("invalid number", offset: start) }
    }
    return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
  }

  private mutating func parseHex4() throws(JSONParseError) -> UInt32 {
    guard position + 4 <= bytes.count else { throw .syntax("truncated \\u escape", offset: position) }
    var value: UInt32 = 0
    for _ in 0..<4 {
      let c = bytes[position]
      let digit: UInt32
      switch c {
      case 48...57: digit = UInt32(c - 48)
      case 65...70: digit = UInt32(c - 55)
      case 97...102: digit = UInt32(c - 87)
      default: throw .syntax("invalid \\u escape", offset: position)
      }
      value = value << 4 | digit
      position += 1
    }
    return value
  }

  /// Reads a string; the input is already known to be valid UTF-8, so raw bytes are copied through.
  private mutating func parseString() throws(JSONParseError) -> String {
    let start = position
    position += 1
    var out: [UInt8] = []
    while true {
      guard let c = current else { throw .syntax("unterminated string", offset: start) }
      position += 1
      switch c {
      case UInt8(ascii: "\""):
        return String(decoding: out, as: UTF8.self)
      case UInt8(ascii: "\\"):
        guard let e = current else { throw .syntax("unterminated escape", offset: position) }
        position += 1
        switch e {
        case UInt8(ascii: "\""): out.append(0x22)
        case UInt8(ascii: "\\"): out.append(0x5C)
        case UInt8(ascii: "/"): out.append(0x2F)
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "u"):
          var scalar = try parseHex4()
          if (0xD800...0xDBFF).contains(scalar) {
            guard current == UInt8(ascii: "\\"), position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "u")
            else { throw .syntax("lone leading surrogate in \\u escape", offset: position) }
            position += 2
            let low = try parseHex4()
            guard (0xDC00...0xDFFF).contains(low) else { throw .syntax("invalid surrogate pair", offset: position) }
            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
          } else if (0xDC00...0xDFFF).contains(scalar) {
            throw .syntax("lone trailing surrogate in \\u escape", offset: position)
          }
          out.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
        default: throw .syntax("invalid escape", offset: position - 1)
        }
      case 0x00..<0x20:
        throw .syntax("control character in string", offset: position - 1)
      default:
        out.append(c)
      }
    }
  }
}

/// JSON output in the two dialects checkpoints use.
public enum JSONWriter {
  /// A string literal as serde_json writes it (the safetensors header): `"` and `\` escaped, control
  /// characters as \b \t \n \f \r or \u00xx, everything else (non-ASCII included) as raw UTF-8.
  public static func compactString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\u{08}": out += "\\b"
      case "\u{0C}": out += "\\f"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case "\u{00}"..."\u{1F}": out += "\\u00" + hex2(scalar.value)
      default: out.unicodeScalars.append(scalar)
      }
    }
    return out + "\""
  }

  /// A string literal as Python's json.dumps writes it by default (ensure_ascii=True): non-ASCII as
  /// \uXXXX escapes (surrogate pairs above the BMP). Used for index.json and config files.
  public static func asciiString(_ s: String) -> String {
    var out = "\""
    for unit in s.utf16 {
      switch unit {
      case 0x22: out += "\\\""
      case 0x5C: out += "\\\\"
      case 0x0A: out += "\\n"
      case 0x0D: out += "\\r"
      case 0x09: out += "\\t"
      case 0x08: out += "\\b"
      case 0x0C: out += "\\f"
      case 0x20..<0x7F: out.unicodeScalars.append(Unicode.Scalar(UInt8(unit)))
      default: out += "\\u" + hex2(UInt32(unit >> 8)) + hex2(UInt32(unit & 0xFF))
      }
    }
    return out + "\""
  }

  /// One line, keys in their order, no spaces (a JSON Lines record).
  public static func compact(_ value: JSONValue) -> String {
    switch value {
    case .null: return "null"
    case .bool(let b): return b ? "true" : "false"
    case .number(let n): return validNumber(n)
    case .string(let s): return compactString(s)
    case .array(let a): return "[" + a.map(compact).joined(separator: ",") + "]"
    case .object(let o): return "{" + o.keys.map { compactString($0) + ":" + compact(o[$0]!) }.joined(separator: ",") + "}"
    }
  }

  /// Pretty output as Python's `json.dumps(value, indent: 2, sort_keys: sortKeys)`.
  /// A number as JSON can hold it: text outside JSON's number grammar (nan, inf, from a value that
  /// escaped every earlier check) is written as null, so no file Espalier writes is invalid JSON. Valid
  /// number text is kept as it is, even beyond a Double's range (re-writing a document never changes it).
  static func validNumber(_ text: String) -> String {
    let bytes = Array(text.utf8)
    guard let first = bytes.first, first == UInt8(ascii: "-") || (first >= 48 && first <= 57), bytes.last.map({ $0 >= 48 && $0 <= 57 }) == true,
      bytes.allSatisfy({ ($0 >= 48 && $0 <= 57) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") })
    else { return "null" }
    return text
  }

  public static func pretty(_ value: JSONValue, sortKeys: Bool = true, indent: Int = 0) -> String {
    let pad = String(repeating: " ", count: indent + 2)
    let closePad = String(repeating: " ", count: indent)
    switch value {
    case .null: return "null"
    case .bool(let b): return b ? "true" : "false"
    case .number(let n): return validNumber(n)
    case .string(let s): return asciiString(s)
    case .array(let a):
      if a.isEmpty { return "[]" }
      return "[\n" + a.map { pad + pretty($0, sortKeys: sortKeys, indent: indent + 2) }.joined(separator: ",\n") + "\n\(closePad)]"
    case .object(let o):
      if o.count == 0 { return "{}" }
      let keys = sortKeys ? o.keys.sorted(by: utf16Less) : o.keys
      return "{\n" + keys.map { pad + asciiString($0) + ": " + pretty(o[$0]!, sortKeys: sortKeys, indent: indent + 2) }
        .joined(separator: ",\n") + "\n\(closePad)}"
    }
  }

  /// Python sorts str keys by code point.
  static func utf16Less(_ a: String, _ b: String) -> Bool { a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars) { $0.value < $1.value } }

  private static func hex2(_ v: UInt32) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int((v >> 4) & 0xF)], digits[Int(v & 0xF)]])
  }
}

/// JSON Lines: one JSON object per non-empty line.
public enum JSONLines {
  public static func read(_ path: String) throws(FormatError) -> [JSONObject] {
    let mapped = try MappedFile(path: path)
    defer { withExtendedLifetime(mapped) {} }
    var objects: [JSONObject] = []
    var lineNumber = 0
    var start = 0
    let bytes = mapped.bytes
    while start < bytes.count {
      var end = start
      while end < bytes.count && bytes[end] != 0x0A { end += 1 }
      lineNumber += 1
      let line = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
      if line.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) {
        do {
          guard let object = try JSONParser.parse(line).objectValue else {
            throw FormatError.io(file: path, reason: "line \(lineNumber) is not a JSON object")
          }
          objects.append(object)
        } catch let error as FormatError {
          throw error
        } catch {
          throw .io(file: path, reason: "line \(lineNumber): \(error)")
        }
      }
      start = end + 1
    }
    return objects
  }
}

/// A JSON file read whole: a missing file, bad JSON or (for `object`) a non-object root is one
/// FormatError naming the file.
public enum JSONFile {
  public static func read(_ path: String) throws(FormatError) -> JSONValue {
    let mapped = try MappedFile(path: path)
    do { return try mapped.withBytes { (b) throws(JSONParseError) in try JSONParser.parse(b) } } catch {
      throw .io(file: path, reason: "invalid JSON: \(error)")
    }
  }

  public static func object(_ path: String) throws(FormatError) -> JSONObject {
    guard let object = try read(path).objectValue else { throw .io(file: path, reason: "not a JSON object") }
    return object
  }
}
