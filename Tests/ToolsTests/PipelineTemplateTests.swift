// examples/pipeline.mk, the template a user copies for their own model, run by make on the tiny fixture:
// every stage's file appears, the verify stage passed and wrote its JUnit report, and a second run does
// nothing but print the perplexities (file targets).

import Foundation
import Testing

@Suite struct PipelineTemplateTests {
  @Test func runsEveryStageOnceAndThenNothing() throws {
    let out = try FinetuneToolTests.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: out) }
    let root = URL(fileURLWithPath: Tools.fixtures).deletingLastPathComponent().path
    let prose = Tools.fixtures + "/tokenizer/prose.txt"
    let args = [
      "-f", root + "/examples/pipeline.mk", "ESPALIER=" + Tools.binDirectory + "/espalier", "MODEL=" + Tools.fixtures + "/tiny-llama",
      "CALIBRATION=" + prose, "DATA=" + prose, "HELDOUT=" + prose, "OUT=" + out + "/run", "STEPS=4", "SEQ_LEN=32", "NSAMPLES=4",
      "EVAL_WINDOWS=4", "FINETUNE=--init-samples 2 --save-every 0",
    ]
    let make = try #require(["/usr/bin/make", "/bin/make"].first { FileManager.default.isExecutableFile(atPath: $0) })
    let first = try Tools.runExecutable(make, args)
    #expect(first.status == 0, "\(first.stdout)\n\(first.stderr)")
    for file in ["eval-dense.json", "eval-pruned.json", "eval-tuned.json", "verify.json", "verify.xml", "compressed/model.safetensors"] {
      #expect(FileManager.default.fileExists(atPath: out + "/run/" + file), "\(file)")
    }
    let verify = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/run/verify.json"))) as? [String: Any])
    #expect(verify["passed"] as? Bool == true)
    #expect(first.stdout.contains("tuned    perplexity "), "\(first.stdout)")
    let second = try Tools.runExecutable(make, args)
    #expect(second.status == 0 && !second.stdout.contains("espalier "), "a re-run ran a stage again: \(second.stdout)")
  }
}
