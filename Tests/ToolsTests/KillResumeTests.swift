// SIGKILL at any moment loses nothing but time: finetune is killed at several points of a run (after a
// given number of logged steps, i.e. mid-step; and the moment a checkpoint directory is being written,
// i.e. mid-checkpoint), resumed with --resume each time, and must end with adapter files bit-identical to
// an uninterrupted run's, with no partial directory left behind.

import Foundation
import Testing

@Suite struct KillResumeTests {
  static let steps = 8
  static func arguments(_ base: String, _ out: String) -> [String] {
    ["finetune", base, "--data", Tools.fixtures + "/tokenizer/prose.txt", "--output", out, "--seq-len", "64", "--batch-size", "2",
      "--grad-accum", "2", "--rank", "4", "--lr", "1e-3", "--init-samples", "4", "--steps", String(steps), "--save-every", "1"]
  }

  /// Starts a run and SIGKILLs it once `when` holds (polled every 0.2 ms); returns whether it was killed
  /// (false: the run finished first).
  static func killed(_ base: String, _ out: String, resume: Bool, when: (String) -> Bool) throws -> Bool {
    let process = Process()
    // The tool itself, not the dispatcher: the signal must reach the process that writes.
    process.executableURL = URL(fileURLWithPath: Tools.binDirectory + "/espalier-finetune")
    process.arguments = Array(arguments(base, out).dropFirst()) + (resume ? ["--resume"] : [])
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    while process.isRunning {
      if when(out) {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        return process.terminationReason == .uncaughtSignal
      }
      usleep(200)
    }
    return false
  }

  static func loggedSteps(_ out: String) -> Int {
    ((try? String(contentsOfFile: out + "/train_log.jsonl", encoding: .utf8)) ?? "").split(separator: "\n").count
  }

  static func checkpointBeingWritten(_ out: String) -> Bool {
    ((try? FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints")) ?? []).contains { $0.contains(".partial-") }
  }

  @Test func sigkillMidStepAndMidCheckpointThenResumeEndsBitIdentical() throws {
    let dir = try FinetuneToolTests.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let base = try FinetuneToolTests.prunedBase(dir)
    let whole = try Tools.run("espalier", Self.arguments(base, dir + "/whole"))
    #expect(whole.status == 0, "\(whole.stderr)")

    let out = dir + "/killed"
    var kills = 0
    // Mid-step: killed after 2 logged steps, then (resumed) after 4; mid-checkpoint: killed while a
    // checkpoint directory is under its temporary name (if the run gets there first, it is killed later).
    if try Self.killed(base, out, resume: false, when: { Self.loggedSteps($0) >= 2 }) { kills += 1 }
    if try Self.killed(base, out, resume: true, when: { Self.loggedSteps($0) >= 4 }) { kills += 1 }
    if try Self.killed(base, out, resume: true, when: { Self.checkpointBeingWritten($0) || Self.loggedSteps($0) >= 6 }) { kills += 1 }
    #expect(kills >= 2, "the runs finished before they could be killed")
    let resumed = try Tools.run("espalier", Self.arguments(base, out) + ["--resume"])
    #expect(resumed.status == 0, "\(resumed.stderr)")

    for name in ["adapter_model.safetensors", "adapter_config.json"] {
      let a = try Data(contentsOf: URL(fileURLWithPath: dir + "/whole/" + name))
      let b = try Data(contentsOf: URL(fileURLWithPath: out + "/" + name))
      #expect(a == b, "\(name) differs from the uninterrupted run's")
    }
    #expect(Self.loggedSteps(out) == Self.steps)
    let left = (try FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints")).filter { !$0.hasPrefix("step-") || $0.contains(".") }
    #expect(left.isEmpty, "partials left behind: \(left)")
  }
}
