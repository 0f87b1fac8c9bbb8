// The shared option groups and typed values of every tool: a wrong enum value, pattern or size is refused
// by the argument parser (exit 64) before any input is opened, and --help lists the allowed values.

import Foundation
import Testing

@Suite struct OptionTests {
  /// A model path that does not exist: a command that got past parsing would exit 2, not 64.
  static let missing = "/nonexistent/espalier-model"

  @Test(arguments: [
    ("espalier-convert", [missing, "/tmp/x", "--format", "zip"]),
    ("espalier-convert", [missing, "/tmp/x", "--dtype", "int4"]),
    ("espalier-convert", [missing, "/tmp/x", "--max-shard-size", "lots"]),
    ("espalier-prune", [missing, "/tmp/x", "--method", "obs", "--pattern", "2:4"]),
    ("espalier-prune", [missing, "/tmp/x", "--method", "magnitude", "--pattern", "2:x"]),
    ("espalier-prune", [missing, "/tmp/x", "--method", "magnitude", "--pattern", "2:4", "--max-memory", "-1GB"]),
    ("espalier-finetune", [missing, "--data", missing, "--output", "/tmp/x", "--gradient", "approximate"]),
    ("espalier-finetune", [missing, "--data", missing, "--output", "/tmp/x", "--init", "zeros"]),
    ("espalier-merge", [missing, missing, "/tmp/x", "--max-shard-size", "5 apples"]),
    ("espalier-verify", [missing, "--pattern", "4:2"]),
    ("espalier-inspect", [missing, "--pattern", ":"]),
  ])
  func wrongValuesAreUsageErrors(tool: String, args: [String]) throws {
    let r = try Tools.run(tool, args)
    #expect(r.status == 64, "\(tool) \(args): \(r.stderr)")
    #expect(r.stderr.contains("invalid") || r.stderr.contains("Error"), "\(r.stderr)")
  }

  @Test func helpListsTheAllowedValues() throws {
    let expected: [(String, [String])] = [
      ("espalier-convert", ["values: keep, f32, f16, bf16", "values: espalier, sparse-bitmask, sparse-24-bitmask", "--max-shard-size", "--overwrite", "--json"]),
      ("espalier-prune", ["values: magnitude, wanda, sparsegpt", "values: keep, f32, f16, bf16", "--max-memory", "--max-shard-size", "--overwrite", "--json"]),
      ("espalier-finetune", ["values: lors, lora, sqft, spp", "values: rslora, lora", "values: reordered, exact", "values: gradient, gradient-exact, random", "--max-memory"]),
      ("espalier-merge", ["--max-shard-size", "--overwrite", "--json"]),
      ("espalier-verify", ["--pattern", "--json"]),
      ("espalier-inspect", ["--pattern", "--json"]),
      ("espalier-eval", ["--json"]),
    ]
    for (tool, needles) in expected {
      let help = try Tools.run(tool, ["--help"]).stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
      for needle in needles { #expect(help.contains(needle), "\(tool): \(needle)") }
    }
  }

  @Test func torchDtypeNamesAreAccepted() throws {
    // Aliases parse (the missing input then fails with 2, not a usage error).
    let r = try Tools.run("espalier-convert", [Self.missing, "/tmp/x", "--dtype", "bfloat16"])
    #expect(r.status == 2, "\(r.stderr)")
  }
}
