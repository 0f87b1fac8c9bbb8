// How espalier-convert reports what it wrote.

import Formats
import ToolSupport

enum ConvertSummary {
  static func print(_ r: ConvertReport, seconds: Double, json: Bool) {
    if json {
      Output.json(.object(JSONObject([
        ("input", .string(r.input)), ("input_format", .string(r.inputKind)), ("output", .string(r.output)),
        ("output_format", .string(r.outputKind)), ("tensors", .number(String(r.tensors))),
        ("bytes_in", .number(String(r.bytesIn))), ("bytes_out", .number(String(r.bytesOut))),
        ("files", .array(r.files.map { .string($0) })), ("seconds", .number(Format.fixed(seconds, 3))),
        ("notes", .array(r.notes.map { .string($0) })),
      ])))
      return
    }
    Output.line("converted \(r.input) (\(r.inputKind)) -> \(r.output) (\(r.outputKind))")
    Output.line("tensors: \(r.tensors)  bytes: \(Format.bytes(r.bytesIn)) in, \(Format.bytes(r.bytesOut)) out  "
      + "time: \(Format.fixed(seconds, 2)) s")
    Output.line("files: \(r.files.joined(separator: ", "))")
  }

  static func printGGUF(_ r: GGUFExportReport, input: String, output: String, type: GGMLType, seconds: Double, json: Bool) {
    if json {
      let nudged = JSONObject(r.nudged.keys.sorted().map { ($0, JSONValue.number(String(r.nudged[$0]!))) })
      Output.json(.object(JSONObject([
        ("input", .string(input)), ("output", .string(output)), ("output_format", .string("gguf")),
        ("type", .string(type.name)), ("tensors", .number(String(r.tensors))), ("bytes_out", .number(String(r.bytesOut))),
        ("nudged_total", .number(String(r.nudgedTotal))), ("nudged", .object(nudged)),
        ("seconds", .number(Format.fixed(seconds, 3))), ("notes", .array(r.notes.map { .string($0) })),
      ])))
      return
    }
    Output.line("converted \(input) -> \(output) (gguf, \(type.name))")
    Output.line("tensors: \(r.tensors)  bytes: \(Format.bytes(r.bytesOut)) out  time: \(Format.fixed(seconds, 2)) s")
    Output.line("kept weights nudged off zero: \(r.nudgedTotal)")
  }
}
