// Shared helpers for the Formats tests: fixture paths, temporary directories, byte builders.

import Foundation
import Testing

@testable import Formats

enum Fixtures {
  /// The repository's fixtures/ folder, found from this source file's path.
  static let root: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.appendingPathComponent("fixtures").path
  }()

  static func path(_ relative: String) -> String { root + "/" + relative }

  static func json(_ relative: String) throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: path(relative)))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
  }
}

/// A fresh directory under /tmp, removed when the value is dropped.
final class TemporaryDirectory {
  let path: String
  init() throws {
    path = NSTemporaryDirectory() + "espalier-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }
  deinit { try? FileManager.default.removeItem(atPath: path) }
  func file(_ name: String) -> String { path + "/" + name }
  var contents: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
}

func readBytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

func writeBytes(_ bytes: [UInt8], to path: String) throws {
  try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// A safetensors image from a header string, an explicit N and data bytes.
func safetensorsBytes(header: String, n: UInt64? = nil, data: [UInt8] = []) -> [UInt8] {
  let json = Array(header.utf8)
  var out: [UInt8] = []
  withUnsafeBytes(of: (n ?? UInt64(json.count)).littleEndian) { out.append(contentsOf: $0) }
  return out + json + data
}

/// Parses an in-memory image as a file named "mem".
func parse(_ bytes: [UInt8]) throws(FormatError) -> SafetensorsHeader {
  let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 8)
  defer { copy.deallocate() }
  copy.copyBytes(from: bytes)
  return try Safetensors.parseHeader(UnsafeRawBufferPointer(rebasing: copy[0..<bytes.count]), file: "mem")
}

/// The error a parse throws, or nil when it succeeds.
func parseError(_ bytes: [UInt8]) -> FormatError? {
  do {
    _ = try parse(bytes)
    return nil
  } catch { return error }
}

func sha256Hex(_ bytes: UnsafeRawBufferPointer) -> String { SHA256.hash(bytes).map { String(format: "%02x", $0) }.joined() }
