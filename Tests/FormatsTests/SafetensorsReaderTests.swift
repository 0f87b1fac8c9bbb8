// The strict reader against every row of the adversarial table (formats.md §1.5), each with its exact
// error, and against files written by the Python `safetensors` package.

import Foundation
import Testing

@testable import Formats

@Suite struct SafetensorsAdversarialTests {
  /// A valid I32 [2,2] file named "test" (the reference test's file).
  static let validHeader = #"{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}"#
  static var validFile: [UInt8] { safetensorsBytes(header: validHeader, data: [UInt8](repeating: 1, count: 16)) }

  @Test func emptyFileIsHeaderTooSmall() {
    #expect(parseError([]) == .headerTooSmall(file: "mem"))
    #expect(parseError([1, 0, 0]) == .headerTooSmall(file: "mem"))
  }

  @Test func lengthOnlyIsInvalidHeaderLength() {
    #expect(parseError([0x3C, 0, 0, 0, 0, 0, 0, 0]) == .invalidHeaderLength(file: "mem"))
  }

  @Test func hugeLengthIsHeaderTooLarge() {
    var bytes: [UInt8] = [0x3C, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF]
    bytes += Array(#"{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}"#.utf8)
    #expect(parseError(bytes) == .headerTooLarge(file: "mem"))
    #expect(parseError(safetensorsBytes(header: "{}", n: 100_000_001)) == .headerTooLarge(file: "mem"))
    // Exactly the limit is allowed (and then too long for this file).
    #expect(parseError(safetensorsBytes(header: "{}", n: 100_000_000)) == .invalidHeaderLength(file: "mem"))
  }

  @Test func nonUTF8IsInvalidHeader() {
    #expect(parseError([1, 0, 0, 0, 0, 0, 0, 0, 0xFF]) == .invalidHeader(file: "mem"))
  }

  @Test func notJSONIsDeserializationError() {
    guard case .invalidHeaderDeserialization = parseError([1, 0, 0, 0, 0, 0, 0, 0, 0x7B]) else {
      Issue.record("expected invalidHeaderDeserialization")
      return
    }
  }

  @Test func polyglotTrailingBytesAreRejected() {
    let bytes = Self.validFile + Array("extra_bogus_data_for_polyglot_file".utf8)
    #expect(parseError(bytes) == .metadataIncompleteBuffer(file: "mem"))
  }

  @Test func truncatedDataIsRejected() {
    #expect(parseError(Array(Self.validFile.dropLast(2))) == .metadataIncompleteBuffer(file: "mem"))
  }

  @Test func jsonAttackWithSharedOffsetsIsInvalidOffset() {
    let entries = (0..<10).map { #""weight_\#($0)":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}"# }
    let bytes = safetensorsBytes(header: "{" + entries.joined(separator: ",") + "}", data: [UInt8](repeating: 0, count: 16))
    guard case .invalidOffset(file: "mem", tensor: let name) = parseError(bytes) else {
      Issue.record("expected invalidOffset")
      return
    }
    #expect(name.hasPrefix("weight_"))
  }

  @Test func sizeMismatchIsTensorInvalidInfo() {
    let bytes = safetensorsBytes(
      header: #"{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
    #expect(parseError(bytes) == .tensorInvalidInfo(file: "mem", tensor: "test"))
  }

  @Test(arguments: ["18446744073709551614", "9223372036854775807"])
  func shapeOverflowIsValidationOverflow(dimension: String) {
    let bytes = safetensorsBytes(
      header: #"{"test":{"dtype":"I32","shape":[2,\#(dimension)],"data_offsets":[0,16]}}"#,
      data: [UInt8](repeating: 0, count: 16))
    #expect(parseError(bytes) == .validationOverflow(file: "mem", tensor: "test"))
  }

  @Test(arguments: ["[2,0]", "[0,0]"])
  func zeroSizedTensorsAreValid(shape: String) throws {
    let header = try parse(safetensorsBytes(header: #"{"test":{"dtype":"I32","shape":\#(shape),"data_offsets":[0,0]}}"#))
    #expect(header.entries.count == 1)
    #expect(header.entries[0].info.elementCount == 0)
  }

  @Test func scalarIsValid() throws {
    let header = try parse(safetensorsBytes(
      header: #"{"test":{"dtype":"I32","shape":[],"data_offsets":[0,4]}}"#, data: [7, 0, 0, 0]))
    #expect(header.entries[0].info.shape == [])
    #expect(header.entries[0].info.elementCount == 1)
  }

  @Test(arguments: ["{}\r \t\n", "\t\n{}\r "])
  func whitespacePaddingIsAccepted(header: String) throws {
    #expect(try parse(safetensorsBytes(header: header)).entries.isEmpty)
  }

  @Test func subByteTypes() throws {
    let misaligned = safetensorsBytes(header: #"{"test":{"dtype":"F4","shape":[1,3],"data_offsets":[0,2]}}"#, data: [0, 0])
    #expect(parseError(misaligned) == .misalignedSlice(file: "mem", tensor: "test"))
    // Upstream builds a view of F4 [1,2] over 2 bytes directly: 2 elements are one byte.
    #expect(throws: FormatError.invalidTensorView(dtype: .f4, shape: [1, 2], byteCount: 2)) {
      _ = try Tensor(name: "test", dtype: .f4, shape: [1, 2], data: [0, 0])
    }
    // The same facts in a file are a size mismatch.
    let wrongSize = safetensorsBytes(header: #"{"test":{"dtype":"F4","shape":[1,2],"data_offsets":[0,2]}}"#, data: [0, 0])
    #expect(parseError(wrongSize) == .tensorInvalidInfo(file: "mem", tensor: "test"))
  }

  @Test func holesOverlapsAndReversedOffsetsAreInvalidOffset() {
    let hole = safetensorsBytes(
      header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#, data: [UInt8](repeating: 0, count: 24))
    #expect(parseError(hole) == .invalidOffset(file: "mem", tensor: "a"))
    let overlap = safetensorsBytes(
      header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
      data: [UInt8](repeating: 0, count: 24))
    #expect(parseError(overlap) == .invalidOffset(file: "mem", tensor: "b"))
    let reversed = safetensorsBytes(
      header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,8]}}"#,
      data: [UInt8](repeating: 0, count: 16))
    #expect(parseError(reversed) == .invalidOffset(file: "mem", tensor: "b"))
  }

  @Test(arguments: [
    #"{"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
    #"{"t":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}"#,
    #"{"t":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}"#,
    #"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}}"#,
    #"{"t":{"dtype":"float32","shape":[1],"data_offsets":[0,4]}}"#,
    #"{"t":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}"#,
    #"{"__metadata__":{"a":1},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
    #"{"__metadata__":{"a":{"b":"c"}},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
    #"[{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}]"#,
    "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}\u{0}\u{0}",
    #"{"t":{"dtype":"F32","shape":[1]}}"#,
    #"{"t":{"shape":[1],"data_offsets":[0,4]}}"#,
    #"{"t":{"dtype":"F32","data_offsets":[0,4]}}"#,
    #"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}"#,
    #"{"t":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}"#,
    #"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616]}}"#,
  ])
  func badValuesAreDeserializationErrors(header: String) {
    let bytes = safetensorsBytes(header: header, data: [0, 0, 0, 0])
    guard case .invalidHeaderDeserialization(file: "mem", reason: _) = parseError(bytes) else {
      Issue.record("expected invalidHeaderDeserialization for \(header), got \(String(describing: parseError(bytes)))")
      return
    }
  }

  @Test func duplicateKeysAreRejected() {
    let header = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
    #expect(parseError(safetensorsBytes(header: header, data: [UInt8](repeating: 0, count: 8)))
      == .duplicateKey(file: "mem", key: "w"))
  }

  @Test func headerLengthNeedNotBeAMultipleOfEight() throws {
    let header = #"{"t":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}"#
    #expect(header.utf8.count % 8 != 0)
    let parsed = try parse(safetensorsBytes(header: header, data: [1, 2, 3]))
    #expect(parsed.entries[0].dataRange == 0..<3)
  }

  @Test func metadataIsReadAndTensorsComeInDataOrder() throws {
    let header = #"{"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"__metadata__":{"format":"pt"},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#
    let parsed = try parse(safetensorsBytes(header: header, data: [1, 2]))
    #expect(parsed.metadata == ["format": "pt"])
    #expect(parsed.entries.map(\.info.name) == ["a", "b"])
  }

  @Test func errorsNameTheFileAndTensor() {
    let error = FormatError.invalidOffset(file: "/m/model.safetensors", tensor: "lm_head.weight")
    #expect(error.description.contains("/m/model.safetensors"))
    #expect(error.description.contains("lm_head.weight"))
  }

  @Test func deepNestingFailsCleanly() {
    let header = String(repeating: "[", count: 100_000)
    guard case .invalidHeaderDeserialization = parseError(safetensorsBytes(header: header)) else {
      Issue.record("expected a deserialization error")
      return
    }
  }
}

@Suite struct SafetensorsPythonFilesTests {
  static let manifestFiles: [String] = {
    guard let manifest = try? Fixtures.json("safetensors/manifest.json"),
      let files = manifest["files"] as? [String: Any]
    else { return [] }
    return files.keys.sorted()
  }()

  /// Every file the Python package wrote opens, with the dtypes, shapes and byte digests it recorded.
  @Test(arguments: manifestFiles)
  func readsWhatPythonWrote(relative: String) throws {
    let manifest = try Fixtures.json("safetensors/manifest.json")
    let record = try #require((manifest["files"] as? [String: Any])?[relative] as? [String: Any])
    let file = try SafetensorsFile(path: Fixtures.path("safetensors/" + relative))
    #expect(file.header.headerLength == (record["header_len"] as? Int))
    #expect(file.metadata == record["metadata"] as? [String: String])
    let tensors = try #require(record["tensors"] as? [[String: Any]])
    #expect(file.entries.count == tensors.count)
    for t in tensors {
      let name = try #require(t["name"] as? String)
      let tensor = try file.tensor(name)
      #expect(tensor.dtype.rawValue == t["dtype"] as? String)
      #expect(tensor.shape == t["shape"] as? [Int])
      #expect(tensor.withUnsafeBytes(sha256Hex) == t["sha256"] as? String, "\(name)")
      if let first = t["first_values"] as? [Double], tensor.dtype.convertsToFloat32, !first.isEmpty {
        let values = try tensor.float32()
        for (i, want) in first.enumerated() where want.isFinite {
          // Values were recorded as float64; widening to f32 rounds by at most half an f32 ulp.
          let tolerance = abs(want) * 0x1p-24
          #expect(abs(Double(values[i]) - want) <= tolerance, "\(name)[\(i)]")
        }
      }
    }
  }

  @Test func missingTensorIsNamed() throws {
    let file = try SafetensorsFile(path: Fixtures.path("safetensors/writer_vectors/i32_test.safetensors"))
    #expect(throws: FormatError.tensorNotFound(file: file.path, tensor: "nope")) { _ = try file.tensor("nope") }
  }

  @Test func unreadableFileIsAnIOError() {
    #expect(throws: FormatError.self) { _ = try SafetensorsFile(path: "/nonexistent/x.safetensors") }
  }
}
