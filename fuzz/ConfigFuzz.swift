// libFuzzer entry point for the JSON side files: config.json (ModelConfig.swift), adapter_config.json and
// espalier.json (PEFT/Adapters.swift), and the JSON reader and writers under them (JSON.swift). Built by
// fuzz/build.sh against the instrumented Formats module. Every input is read as all three files.
//
// Properties checked on every input:
//  1. JSONParser never traps; a document it accepts, written back by JSONWriter (compact, and pretty
//     with keys in file order), parses to the same value;
//  2. LlamaConfig(json:file:), PEFTAdapterConfig(json:file:) and EspalierAdapterRecord.read (from a
//     scratch directory in /dev/shm) never trap: they give a value or throw a FormatError;
//  3. an accepted adapter config, written as PEFT's adapter_config.json, is valid JSON and reads back
//     to the same config.

@testable import Formats

private let directory: String = {
  let d = Scratch.path("config")
  Scratch.makeDirectory(d)
  return d
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = UnsafeRawBufferPointer(start: data, count: size)
  Scratch.write(bytes, to: directory + "/" + EspalierAdapterRecord.fileName)
  _ = try? EspalierAdapterRecord.read(directory)

  guard let value = try? JSONParser.parse(bytes) else { return 0 }
  for (writer, text) in [("compact", JSONWriter.compact(value)), ("pretty", JSONWriter.pretty(value, sortKeys: false))] {
    guard let again = try? JSONParser.parse(Array(text.utf8)) else { propertyFailed("JSONWriter.\(writer) wrote invalid JSON:\n\(text)") }
    guard again == value else { propertyFailed("JSONWriter.\(writer) changed the value:\n\(text)") }
  }

  if let object = value.objectValue { _ = try? LlamaConfig(json: object, file: "config.json") }

  if let adapter = try? PEFTAdapterConfig(json: value, file: "adapter_config.json") {
    let text = JSONWriter.pretty(adapter.json) + "\n"
    guard let written = try? JSONParser.parse(Array(text.utf8)) else {
      propertyFailed("the adapter_config.json written for an accepted config is not valid JSON:\n\(text)")
    }
    guard let again = try? PEFTAdapterConfig(json: written, file: "adapter_config.json"), again == adapter else {
      propertyFailed("adapter_config.json does not read back to the same config:\n\(text)")
    }
  }
  return 0
}
