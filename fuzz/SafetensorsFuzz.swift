// libFuzzer entry point for the safetensors reader. Built by fuzz/build.sh against the instrumented
// Formats module, like the other targets.
//
// Properties checked on every input:
//  1. parsing never traps: it returns a header or throws a FormatError;
//  2. every accepted tensor can be viewed, and widened to f32 when its dtype converts;
//  3. an accepted file re-serialised by our writer parses again to the same tensors and metadata.

@testable import Formats

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = UnsafeRawBufferPointer(start: data, count: size)
  guard let header = try? Safetensors.parseHeader(bytes, file: "fuzz") else { return 0 }
  var tensors: [Tensor] = []
  for entry in header.entries {
    let start = header.dataStart + entry.dataRange.lowerBound
    let view = UnsafeRawBufferPointer(rebasing: bytes[start..<(header.dataStart + entry.dataRange.upperBound)])
    guard let tensor = try? Tensor(info: entry.info, bytes: view, owner: nil) else {
      fatalError("accepted tensor \(entry.info.name) has no valid view")
    }
    if tensor.dtype.convertsToFloat32, tensor.elementCount <= 1 << 16 {
      guard let values = try? tensor.float32(), values.count == tensor.elementCount else {
        fatalError("widening \(entry.info.name) failed")
      }
    }
    tensors.append(tensor)
  }
  // Round trip through the writer's header, in memory.
  let ordered = SafetensorsWriter.bufferOrder(tensors.map(\.info))
  guard let json = try? SafetensorsWriter.header(for: ordered, metadata: header.metadata, file: "fuzz") else {
    fatalError("writer refused an accepted header")
  }
  var image: [UInt8] = []
  withUnsafeBytes(of: UInt64(json.count).littleEndian) { image.append(contentsOf: $0) }
  image += json
  let byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0) })
  for info in ordered { image += byName[info.name]!.byteArray }
  let again: SafetensorsHeader
  do { again = try image.withUnsafeBytes { try Safetensors.parseHeader($0, file: "roundtrip") } } catch {
    fatalError("re-serialised file does not parse: \(error)")
  }
  guard again.metadata == header.metadata,
    Set(again.entries.map { $0.info.name }) == Set(header.entries.map { $0.info.name }),
    again.entries.allSatisfy({ byName[$0.info.name]!.info == $0.info })
  else { fatalError("round trip changed the tensors or metadata") }
  return 0
}
