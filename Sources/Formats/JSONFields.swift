// Typed field reads for the JSON side files of checkpoints (config.json and its nested objects).

/// Typed reads of a JSON object's fields: a present key of the wrong type is an error that names the
/// key, the type found and the type expected (never reported as missing).
public struct JSONFields {
  public let object: JSONObject
  public let file: String
  public var prefix = ""

  public init(object: JSONObject, file: String, prefix: String = "") {
    (self.object, self.file, self.prefix) = (object, file, prefix)
  }

  func wrongType(_ key: String, _ expected: String) -> FormatError {
    .io(file: file, reason: "`\(prefix)\(key)` is \(JSONFields.describe(object[key]!)); expected \(expected)")
  }

  static func describe(_ value: JSONValue) -> String {
    switch value {
    case .null: return "null"
    case .bool(let b): return "a boolean (\(b))"
    case .number(let n): return "the number \(n)"
    case .string(let s): return "a string (\"\(s.prefix(40))\")"
    case .array: return "an array"
    case .object: return "an object"
    }
  }

  /// nil when absent (or null); an error when present and not a non-negative integer.
  public func int(_ key: String) throws(FormatError) -> Int? {
    guard let value = object[key], value != .null else { return nil }
    guard let v = value.intValue else { throw wrongType(key, "a non-negative integer") }
    return v
  }
  public func double(_ key: String) throws(FormatError) -> Double? {
    guard let value = object[key], value != .null else { return nil }
    guard let v = value.doubleValue else { throw wrongType(key, "a number") }
    return v
  }
  public func bool(_ key: String) throws(FormatError) -> Bool? {
    guard let value = object[key], value != .null else { return nil }
    guard let v = value.boolValue else { throw wrongType(key, "true or false") }
    return v
  }
  public func string(_ key: String) throws(FormatError) -> String? {
    guard let value = object[key], value != .null else { return nil }
    guard let v = value.stringValue else { throw wrongType(key, "a string") }
    return v
  }
}
