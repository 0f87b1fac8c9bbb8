// Finetune.run as a library call: the events it reports, what it leaves in OUT (through TrainingStore),
// a resume that ends where an uninterrupted run ends, and the refusals a tool turns into usage errors.

import Foundation
import Testing

@testable import Formats
@testable import Surgery

@Suite struct FinetuneRunTests {
  static func options(steps: Int) -> FinetuneOptions {
    var o = FinetuneOptions()
    (o.rank, o.alpha, o.lr, o.batchSize, o.gradAccum, o.seqLen, o.steps, o.saveEvery, o.initSamples) = (4, 8, 1e-3, 2, 1, 16, steps, 2, 4)
    return o
  }

  static func run(_ output: String, _ o: FinetuneOptions) throws(SurgeryError) -> (FinetuneReport, [FinetuneEvent]) {
    var events: [FinetuneEvent] = []
    let report = try Finetune.run(
      modelPath: fixturePath("tiny-llama"), dataPath: fixturePath("tokenizer/prose.txt"), output: output, options: o
    ) { events.append($0) }
    return (report, events)
  }

  @Test func reportsStepsAndRefusesAResumeWithOtherSettings() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-run-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (report, events) = try Self.run(dir + "/full", Self.options(steps: 4))
    let steps = events.compactMap { event -> Int? in if case .step(let r, let total, _, _) = event, total == 4 { return r.step } else { return nil } }
    #expect(steps == [1, 2, 3, 4])
    #expect(events.contains { if case .initProgress(let done, let total) = $0 { return done == total && total == 3 } else { return false } })
    #expect(report.steps == 4 && report.last?.step == 4 && report.settings.method == .lors && report.settings.scaleRule == .rslora)
    let store = TrainingStore(directory: dir + "/full")
    #expect(store.latestCheckpoint() == dir + "/full/checkpoints/step-000004")
    #expect(try JSONLines.read(store.logPath).map { $0["step"]?.intValue } == [1, 2, 3, 4])
    #expect(try EspalierAdapterRecord.read(dir + "/full")?.method == "lors")

    _ = try Self.run(dir + "/split", Self.options(steps: 2))
    var again = Self.options(steps: 4)
    again.resume = true
    // The 2-step run's checkpoint has steps = 2 in its settings: a different schedule, refused by name.
    do {
      _ = try Self.run(dir + "/split", again)
      Issue.record("a resume with other settings ran")
    } catch {
      guard case .resume(let why) = error else { Issue.record("expected .resume, got \(error)"); return }
      #expect(why.contains("steps: checkpoint 2, now 4"))
    }
  }

  @Test func resumeContinuesExactly() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-run-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    _ = try Self.run(dir + "/full", Self.options(steps: 4))
    // Stop after step 2 by removing the later checkpoints and the adapter, then resume.
    try FileManager.default.copyItem(atPath: dir + "/full", toPath: dir + "/cut")
    for name in ["checkpoints/step-000004", "adapter_model.safetensors", "espalier.json"] {
      try FileManager.default.removeItem(atPath: dir + "/cut/" + name)
    }
    var resume = Self.options(steps: 4)
    resume.resume = true
    let (_, events) = try Self.run(dir + "/cut", resume)
    #expect(events.contains { if case .info(let text) = $0 { return text.contains("resumed from") && text.contains("step 2") } else { return false } })
    let a = try Data(contentsOf: URL(fileURLWithPath: dir + "/full/adapter_model.safetensors"))
    let b = try Data(contentsOf: URL(fileURLWithPath: dir + "/cut/adapter_model.safetensors"))
    #expect(a == b)
    #expect(try JSONLines.read(dir + "/cut/train_log.jsonl").map { $0["step"]?.intValue } == [1, 2, 3, 4])
  }

  @Test func refusalsNameTheFlag() {
    var o = Self.options(steps: 1)
    o.method = .spp
    o.initialization = .gradient
    #expect(throws: SurgeryError.invalidRequest("--init gradient needs a low-rank method; spp starts from b = 0")) { try o.check() }
    o = Self.options(steps: 1)
    o.targets = ["q_proj", "x_proj"]
    #expect(throws: SurgeryError.self) { try o.check() }
    o = Self.options(steps: 1)
    (o.resume, o.overwrite) = (true, true)
    #expect(throws: SurgeryError.invalidRequest("--resume and --overwrite exclude each other")) { try o.check() }
  }
}
