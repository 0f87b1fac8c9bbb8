// The promises every tool keeps about OUT (README "Guarantees"): the input is never modified, an existing
// OUT is replaced only with --overwrite and only when it is a regular file or a directory of Espalier's own
// files; links, devices, pipes and foreign directories are refused; dead processes' partials are removed.

import Foundation
import Testing

@Suite struct OutputPathToolTests {
  let fm = FileManager.default
  let tiny = Tools.fixtures + "/tiny-llama"

  /// Every file under `path` with its bytes, to show that nothing changed.
  func snapshot(_ path: String) throws -> [String: Data] {
    var files: [String: Data] = [:]
    for name in try fm.subpathsOfDirectory(atPath: path) {
      var isDirectory: ObjCBool = false
      if fm.fileExists(atPath: path + "/" + name, isDirectory: &isDirectory), !isDirectory.boolValue {
        files[name] = try Data(contentsOf: URL(fileURLWithPath: path + "/" + name))
      }
    }
    return files
  }

  func copyOfTiny(_ dir: String) throws -> String {
    let copy = dir + "/in"
    try fm.copyItem(atPath: tiny, toPath: copy)
    return copy
  }

  @Test func existingDirectoryNeedsOverwriteAndForeignFilesAreNeverDeleted() throws {
    let dir = try ConvertToolTests.temporaryDirectory()
    defer { try? fm.removeItem(atPath: dir) }
    let out = dir + "/out"
    try fm.createDirectory(atPath: out, withIntermediateDirectories: true)
    try Data("mine".utf8).write(to: URL(fileURLWithPath: out + "/notes.txt"))
    for (tool, args) in [
      ("espalier-prune", [tiny, out, "--method", "magnitude", "--sparsity", "0.5"]),
      ("espalier-convert", [tiny, out]),
    ] {
      let refused = try Tools.run(tool, args)
      #expect(refused.status == 2, "\(tool): \(refused.stderr)")
      #expect(refused.stderr.contains("--overwrite"), "\(tool): \(refused.stderr)")
      let forced = try Tools.run(tool, args + ["--overwrite"])
      #expect(forced.status == 2, "\(tool): \(forced.stderr)")
      #expect(forced.stderr.contains("notes.txt") && forced.stderr.contains("did not write"), "\(tool): \(forced.stderr)")
      #expect(try snapshot(out) == ["notes.txt": Data("mine".utf8)])
    }
    // A directory Espalier wrote is replaced whole with --overwrite.
    try fm.removeItem(atPath: out + "/notes.txt")
    #expect(try Tools.run("espalier-convert", [tiny, out, "--overwrite"]).status == 0)
    let again = try Tools.run("espalier-prune", [tiny, out, "--method", "magnitude", "--sparsity", "0.5", "--overwrite"])
    #expect(again.status == 0, "\(again.stderr)")
    #expect(fm.fileExists(atPath: out + "/sparsity.json"))
  }

  @Test func symbolicLinksAreRefusedAndTheirTargetsKept() throws {
    let dir = try ConvertToolTests.temporaryDirectory()
    defer { try? fm.removeItem(atPath: dir) }
    let input = try copyOfTiny(dir)
    let before = try snapshot(input)
    let link = dir + "/link"
    try fm.createSymbolicLink(atPath: link, withDestinationPath: input)
    for (tool, args) in [
      ("espalier-convert", [input, link, "--overwrite"]),
      ("espalier-prune", [input, link, "--method", "magnitude", "--sparsity", "0.5", "--overwrite"]),
      ("espalier-finetune", [input, "--data", Tools.fixtures + "/tokenizer/prose.txt", "--output", link, "--overwrite", "--steps", "1",
        "--seq-len", "16", "--batch-size", "1", "--grad-accum", "1", "--init", "random"]),
    ] {
      let result = try Tools.run(tool, args)
      #expect(result.status == 2, "\(tool): \(result.stderr)")
      #expect(result.stderr.contains("symbolic link"), "\(tool): \(result.stderr)")
      #expect(try snapshot(input) == before, "\(tool) changed the link's target")
      #expect((try? fm.destinationOfSymbolicLink(atPath: link)) == input)
    }
  }

  @Test func theInputIsNeverReplaced() throws {
    let dir = try ConvertToolTests.temporaryDirectory()
    defer { try? fm.removeItem(atPath: dir) }
    let input = try copyOfTiny(dir)
    let before = try snapshot(input)
    for args in [
      [input, input, "--overwrite"],  // OUT is the input
      [input, input + "/", "--overwrite"],
      [input + "/model.safetensors", dir, "--overwrite"],  // OUT holds the input
      [input, input + "/model.safetensors", "--overwrite"],  // OUT lies inside the input
    ] {
      let result = try Tools.run("espalier-convert", args)
      #expect(result.status == 2, "\(args): \(result.stderr)")
      #expect(result.stderr.contains("input"), "\(args): \(result.stderr)")
      #expect(try snapshot(input) == before, "\(args) changed the input")
    }
    // Writing a new file beside the input's files is fine: nothing of the input changes.
    let beside = try Tools.run("espalier-convert", [input, input + "/copy.safetensors"])
    #expect(beside.status == 0, "\(beside.stderr)")
  }

  @Test func devicesAndPipesAreRefused() throws {
    let dir = try ConvertToolTests.temporaryDirectory()
    defer { try? fm.removeItem(atPath: dir) }
    let fifo = dir + "/pipe"
    #expect(mkfifo(fifo, 0o644) == 0)
    let result = try Tools.run("espalier-convert", [tiny, fifo, "--overwrite"])
    #expect(result.status == 2, "\(result.stderr)")
    #expect(result.stderr.contains("not a regular file or directory"), "\(result.stderr)")
    var info = stat()
    #expect(lstat(fifo, &info) == 0 && (info.st_mode & S_IFMT) == S_IFIFO)
  }

  @Test func partialsOfDeadProcessesAreRemovedAndLiveOnesKept() throws {
    let dir = try ConvertToolTests.temporaryDirectory()
    defer { try? fm.removeItem(atPath: dir) }
    // A pid that no longer runs: a child that has exited and been reaped.
    let child = Process()
    child.executableURL = URL(fileURLWithPath: "/bin/true")
    try child.run()
    child.waitUntilExit()
    let dead = child.processIdentifier
    let live = getpid()
    let out = dir + "/out"
    let stale = [out + ".partial-\(dead)", out + ".old-\(dead)"]
    for path in stale {
      try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
      try Data(count: 4096).write(to: URL(fileURLWithPath: path + "/model.safetensors"))
    }
    try Data(count: 16).write(to: URL(fileURLWithPath: dir + "/.out.safetensors.\(dead).77.tmp"))
    let running = out + ".partial-\(live)"
    try fm.createDirectory(atPath: running, withIntermediateDirectories: true)
    let unrelated = dir + "/other.partial-\(dead)"
    try fm.createDirectory(atPath: unrelated, withIntermediateDirectories: true)

    let result = try Tools.run("espalier-convert", [tiny, out])
    #expect(result.status == 0, "\(result.stderr)")
    for path in stale { #expect(!fm.fileExists(atPath: path), "\(path) left behind") }
    #expect(!fm.fileExists(atPath: dir + "/.out.safetensors.\(dead).77.tmp"))
    #expect(fm.fileExists(atPath: running), "a live process's partial was removed")
    #expect(fm.fileExists(atPath: unrelated), "another output's partial was removed")
  }
}
