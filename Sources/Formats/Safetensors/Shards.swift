// Sharded safetensors checkpoints (formats.md §1.6): `model-00001-of-0000N.safetensors` files and a
// `model.safetensors.index.json` whose `weight_map` names the file of every tensor. Readers use only the
// weight_map; `metadata.total_size` is the sum of tensor data bytes (headers excluded).

public enum ByteSize {
  /// Parses sizes the way huggingface_hub does: decimal units (KB = 1e3, MB, GB, TB), binary units
  /// (KiB = 2^10, MiB, GiB, TiB), or a plain byte count; case-insensitive, fractions allowed ("1.5GB").
  public static func parse(_ text: String) throws(FormatError) -> Int {
    let trimmed = text.trimmingWhitespace()
    let digitsEnd = trimmed.firstIndex { !($0.isASCII && ($0.isNumber || $0 == ".")) } ?? trimmed.endIndex
    let number = String(trimmed[..<digitsEnd])
    let unit = String(trimmed[digitsEnd...]).trimmingWhitespace().uppercased()
    let multipliers: [String: Double] = [
      "": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
      "KIB": 1024, "MIB": 1_048_576, "GIB": 1_073_741_824, "TIB": 1_099_511_627_776,
    ]
    guard !number.isEmpty, let value = Double(number), let multiplier = multipliers[unit] else {
      throw .invalidSize(text: text)
    }
    let bytes = (value * multiplier).rounded(.down)
    guard bytes >= 1, bytes < 9e18 else { throw .invalidSize(text: text) }
    return Int(bytes)
  }
}

public enum ShardPlanner {
  /// Groups tensors (given with their byte sizes, in state-dict order) into shards the way
  /// huggingface_hub's `split_state_dict_into_shards_factory` does: a tensor larger than the budget gets
  /// a shard of its own, appended at once; otherwise a new shard starts when the current one would
  /// exceed the budget. Returns indices into `sizes`, shard by shard.
  public static func plan(sizes: [Int], maxShardSize: Int) -> [[Int]] {
    var shards: [[Int]] = []
    var current: [Int] = []
    var currentSize = 0
    for (i, size) in sizes.enumerated() {
      if size > maxShardSize {
        shards.append([i])
        continue
      }
      if currentSize + size > maxShardSize {
        shards.append(current)
        current = []
        currentSize = 0
      }
      current.append(i)
      currentSize += size
    }
    if !current.isEmpty { shards.append(current) }
    return shards
  }

  /// `model-00001-of-00003.safetensors` (1-based), or `model.safetensors` when there is one shard.
  public static func shardName(_ index: Int, of count: Int, prefix: String = "model") -> String {
    if count == 1 { return "\(prefix).safetensors" }
    func pad(_ v: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, 5 - s.count)) + s }
    return "\(prefix)-\(pad(index + 1))-of-\(pad(count)).safetensors"
  }
}

public struct ShardIndex: Equatable, Sendable {
  public static let fileName = "model.safetensors.index.json"
  /// Tensor name -> shard file name (relative to the index's directory).
  public var weightMap: [String: String]
  public var totalSize: Int?

  public init(weightMap: [String: String], totalSize: Int?) {
    self.weightMap = weightMap
    self.totalSize = totalSize
  }

  /// Reads an index file strictly: duplicate keys and non-string entries are errors; shard names must
  /// stay inside the checkpoint directory.
  public init(contentsOf path: String) throws(FormatError) {
    let mapped = try MappedFile(path: path)
    defer { withExtendedLifetime(mapped) {} }
    let root: JSONValue
    do { root = try JSONParser.parse(mapped.bytes) } catch {
      throw .shards(index: path, problem: .invalidIndex(error.description))
    }
    guard let object = root.objectValue, let map = object["weight_map"]?.objectValue else {
      throw .shards(index: path, problem: .invalidIndex("no `weight_map` object"))
    }
    var weightMap: [String: String] = [:]
    for name in map.keys {
      guard let shard = map[name]!.stringValue else {
        throw .shards(index: path, problem: .invalidIndex("weight_map entry `\(name)` is not a string"))
      }
      guard !shard.isEmpty, !shard.hasPrefix("/"), !shard.split(separator: "/").contains("..") else {
        throw .shards(index: path, problem: .invalidIndex("shard path `\(shard)` leaves the checkpoint directory"))
      }
      weightMap[name] = shard
    }
    self.weightMap = weightMap
    totalSize = object["metadata"]?.objectValue?["total_size"]?.intValue
  }

  /// The index as transformers writes it: `json.dumps(index, indent=2, sort_keys=True) + "\n"`.
  public func json() -> String {
    var metadata = JSONObject()
    if let totalSize { metadata["total_size"] = .number(String(totalSize)) }
    var map = JSONObject()
    for name in weightMap.keys { map[name] = .string(weightMap[name]!) }
    let root = JSONObject([("metadata", .object(metadata)), ("weight_map", .object(map))])
    return JSONWriter.pretty(.object(root)) + "\n"
  }

  /// The distinct shard file names, sorted.
  public var shardFiles: [String] { Set(weightMap.values).sorted() }
}

extension String {
  func trimmingWhitespace() -> String {
    let scalars = unicodeScalars
    guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
    let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
    return String(scalars[first...last])
  }
}
