// espalier report as a binary, on two real runs of the tiny model (made once for the suite: the model
// pruned 2:4, a lors and a lora run of a few steps, a perplexity report): the page has a chart per figure,
// a loss line per run, a row per decoder layer whose numbers equal what this test counts itself in the
// base and the adapters; labels are escaped; nothing is fetched; broken, empty and unfinished runs are
// shown, not fatal; OUT is refused without --overwrite; a missing base is named. Then the page in a real
// headless browser (Debian's chromium): no console message, the inline check ran, a screenshot.

import Foundation
import Testing

@testable import Formats

/// Where the suite's runs live (removed at exit).
private let reportTestsDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-report-tests-\(getpid())").path

@Suite struct ReportTests {
  struct Runs: Sendable {
    var dir: String
    var base: String
    /// A lors run in a directory whose name needs escaping, and a lora run; 5 steps each.
    var lors: String
    var lora: String
    /// `espalier eval --json` of the base.
    var eval: String
  }

  static let made = Result { () throws -> Runs in
    let dir = reportTestsDirectory
    try? FileManager.default.removeItem(atPath: dir)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: reportTestsDirectory) }
    let runs = Runs(dir: dir, base: dir + "/base", lors: dir + "/lors <&>", lora: dir + "/lora", eval: dir + "/eval-base.json")
    let prune = try Tools.run("espalier-prune", [Tools.fixtures + "/tiny-llama", runs.base, "--method", "magnitude", "--pattern", "2:4"])
    guard prune.status == 0 else { throw Failure("prune: \(prune.stderr)") }
    for (method, out) in [("lors", runs.lors), ("lora", runs.lora)] {
      let r = try Tools.run("espalier", ["finetune", runs.base, "--data", Tools.fixtures + "/tokenizer/prose.txt", "--output", out, "--method", method,
        "--seq-len", "64", "--batch-size", "2", "--grad-accum", "1", "--rank", "4", "--lr", "1e-3", "--init-samples", "4", "--steps", "5", "--save-every", "5"])
      guard r.status == 0 else { throw Failure("finetune \(method): \(r.stderr)") }
    }
    let e = try Tools.run("espalier", ["eval", runs.base, "--text", Tools.fixtures + "/tokenizer/prose.txt", "--seq-len", "64", "--limit", "4", "--json"])
    guard e.status == 0 else { throw Failure("eval: \(e.stderr)") }
    try e.stdout.write(toFile: runs.eval, atomically: true, encoding: .utf8)
    return runs
  }

  struct Failure: Error, CustomStringConvertible { var description: String; init(_ d: String) { description = d } }

  static func runs() throws -> Runs { try made.get() }

  static func report(_ arguments: [String]) throws -> ToolResult { try Tools.run("espalier", ["report"] + arguments) }

  static func json(_ text: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not JSON: \(text)")
  }

  /// The page for both runs and the eval, with labels and a title that need escaping; and its --json.
  static func twoRunPage(_ out: String) throws -> (html: String, report: [String: Any]) {
    let runs = try runs()
    let r = try report([runs.lors, runs.lora, "--eval", "base <&>=" + runs.eval, "-o", out, "--title", "Runs <&> \"quoted\"", "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    return (try String(contentsOfFile: out, encoding: .utf8), try json(r.stdout))
  }

  /// The values of attribute `name` in `html`, in order.
  static func attributes(_ name: String, in html: String) -> [String] {
    html.components(separatedBy: " \(name)=\"").dropFirst().map { String($0.prefix { $0 != "\"" }) }
  }

  /// The text of the element that starts with `start`, up to the first `end` after it.
  static func slice(_ html: String, from start: String, to end: String) throws -> String {
    let from = try #require(html.range(of: start), "no \(start)")
    let to = try #require(html.range(of: end, range: from.upperBound..<html.endIndex))
    return String(html[from.lowerBound..<to.upperBound])
  }

  /// Per decoder layer, counted here from the files: zeros and elements of the base's projections, and
  /// ‖W' − W‖² and ‖W‖² with W' = W + s·lora_B·lora_A (masked by W ≠ 0 unless `dense`), in f64.
  static func independent(base: String, adapter: String, dense: Bool) throws -> [(zeros: Int, elements: Int, zerosAfter: Int, delta: Double, weight: Double)] {
    let weights = try SafetensorsFile(path: base + "/model.safetensors")
    let factors = try SafetensorsFile(path: adapter + "/adapter_model.safetensors")
    let scale = try #require(try json(String(contentsOfFile: adapter + "/espalier.json", encoding: .utf8))["scale"] as? Double)
    return try (0..<2).map { layer in
      var totals = (zeros: 0, elements: 0, zerosAfter: 0, delta: 0.0, weight: 0.0)
      for module in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"] {
        let name = "model.layers.\(layer).\(module)"
        let w = try weights.tensor(name + ".weight")
        let (out, inp) = (w.shape[0], w.shape[1])
        let values = try w.float32()
        let a = try factors.tensor("base_model.model.\(name).lora_A.weight").float32()  // (r, in)
        let b = try factors.tensor("base_model.model.\(name).lora_B.weight").float32()  // (out, r)
        let r = a.count / inp
        for i in 0..<out {
          for j in 0..<inp {
            let v = Double(values[i * inp + j])
            var product = 0.0
            for k in 0..<r { product += Double(b[i * r + k]) * Double(a[k * inp + j]) }
            let change = dense || v != 0 ? scale * product : 0
            totals.zeros += v == 0 ? 1 : 0
            totals.zerosAfter += Float(v + change) == 0 ? 1 : 0
            totals.elements += 1
            totals.delta += change * change
            totals.weight += v * v
          }
        }
      }
      return totals
    }
  }

  @Test func pageHasEveryChartAndLayerNumbersThatMatchTheFiles() throws {
    let runs = try Self.runs()
    let out = runs.dir + "/page-\(UUID().uuidString).html"
    let (html, report) = try Self.twoRunPage(out)
    // Three charts (loss, sparsity, change), each an inline <svg>; one loss line per run.
    #expect(html.components(separatedBy: "<svg class=\"chart\"").count - 1 == 3)
    let loss = try Self.slice(html, from: "<svg class=\"chart\" id=\"loss-chart\"", to: "</svg>")
    #expect(loss.components(separatedBy: "<path class=\"series\"").count - 1 == 2)
    #expect(Self.attributes("data-series", in: loss).dropFirst() == ["lors &lt;&amp;&gt;", "lora"])
    let sparsity = try Self.slice(html, from: "<svg class=\"chart\" id=\"sparsity-chart\"", to: "</svg>")
    #expect(sparsity.contains("data-series=\"4\"") && sparsity.components(separatedBy: "<rect x=").count - 1 >= 4 * 2)
    // Every text is escaped: the run label (a directory name), the eval label, the title.
    #expect(!html.contains("<&>") && !html.contains("\"quoted\"<"))
    #expect(html.contains("<title>Runs &lt;&amp;&gt; &quot;quoted&quot;</title>") && html.contains("lors &lt;&amp;&gt;") && html.contains("base &lt;&amp;&gt;"))
    // Self-contained: no URL, no attribute that loads anything.
    for needle in ["http://", "https://", " src=", " href=", "url(", "@import"] { #expect(!html.contains(needle), "\(needle)") }
    #expect(html.contains("Content-Security-Policy") && html.contains("<script>") && html.contains("data-rendered"))

    // A row per decoder layer of the fixture (2) in each run's table, and the numbers counted here.
    let jsonRuns = try #require(report["runs"] as? [[String: Any]])
    #expect(jsonRuns.map { $0["label"] as? String } == ["lors <&>", "lora"] && report["output"] as? String == out)
    for (index, (dir, dense)) in [(runs.lors, false), (runs.lora, true)].enumerated() {
      let expected = try Self.independent(base: runs.base, adapter: dir, dense: dense)
      let articles = html.components(separatedBy: "<article class=\"run\">").dropFirst().map { $0.components(separatedBy: "</article>")[0] }
      let section = try #require(articles.count == 2 ? articles[index] : nil)
      #expect(section.components(separatedBy: "<tr class=\"layer\"").count - 1 == 2)
      let layers = try #require(jsonRuns[index]["layers"] as? [[String: Any]])
      #expect(layers.count == 2 && jsonRuns[index]["method"] as? String == (dense ? "lora" : "lors"))
      let before = Self.attributes("data-sparsity-before", in: section).compactMap(Double.init)
      let after = Self.attributes("data-sparsity-after", in: section).compactMap(Double.init)
      let change = Self.attributes("data-relative-change", in: section).compactMap(Double.init)
      #expect(before.count == 3 && after.count == 3 && change.count == 3, "2 layers and the total")
      for (l, e) in expected.enumerated() {
        let ratio = Double(e.zeros) / Double(e.elements)
        #expect(before[l] == ratio && layers[l]["sparsity_before"] as? Double == ratio && layers[l]["zeros_before"] as? Int == e.zeros)
        #expect(ratio == 0.5, "2:4 pruned")
        #expect(section.contains(">\(String(format: "%.2f", ratio * 100))%</td>"))
        if dense {
          #expect(after[l] < before[l] && layers[l]["zeros_after"] as? Int == e.zerosAfter, "lora fills the zeros")
        } else {
          #expect(after[l] == before[l] && layers[l]["zeros_after"] as? Int == e.zeros, "lors keeps them")
        }
        let relative = (e.delta / e.weight).squareRoot()
        #expect(relative > 0 && abs(change[l] - relative) <= 1e-4 * relative, "\(change[l]) vs \(relative)")
        #expect(abs((layers[l]["relative_change"] as? Double ?? 0) - relative) <= 1e-4 * relative)
      }
    }
    // The perplexity table: the eval's numbers.
    let eval = try Self.json(String(contentsOfFile: runs.eval, encoding: .utf8))
    let table = try Self.slice(html, from: "<table class=\"perplexity\"", to: "</table>")
    #expect(Self.attributes("data-perplexity", in: table).compactMap(Double.init) == [try #require(eval["perplexity"] as? Double)])
    #expect(table.contains("4 × 64") && table.contains(">\(eval["tokens"] as? Int ?? -1)</td>"))
    let evals = try #require(report["evals"] as? [[String: Any]])
    #expect(evals.count == 1 && evals[0]["label"] as? String == "base <&>" && evals[0]["perplexity"] as? Double == eval["perplexity"] as? Double)
    // The settings side by side.
    let settings = try Self.slice(html, from: "<table class=\"settings\"", to: "</table>")
    #expect(settings.contains("<th>rank</th><td>4</td><td>4</td>") && settings.contains("<th>steps logged</th><td>5</td><td>5</td>"))
  }

  @Test func brokenEmptyAndUnfinishedRunsAreShownNotFatal() throws {
    let runs = try Self.runs()
    let dir = runs.dir + "/broken-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    // A copy of the lora run whose log has a non-finite loss (JSON null, as finetune writes NaN) and a last
    // line half-written; an eval*.json in it that is a multiple-choice report (skipped with a note).
    let broken = dir + "/diverged"
    try FileManager.default.copyItem(atPath: runs.lora, toPath: broken)
    let lines = try String(contentsOfFile: broken + "/train_log.jsonl", encoding: .utf8).split(separator: "\n")
    let nulled = lines[2].replacingOccurrences(of: #""loss":[^,]*"#, with: "\"loss\":null", options: .regularExpression)
    try ([String(lines[0]), String(lines[1]), nulled, String(lines[3]), String(lines[4]), "{\"step\":6,\"lo"].joined(separator: "\n"))
      .write(toFile: broken + "/train_log.jsonl", atomically: true, encoding: .utf8)
    try "{\"items\": 3, \"acc\": 0.5, \"acc_norm\": 0.5}\n".write(toFile: broken + "/eval-choices.json", atomically: true, encoding: .utf8)
    // A run killed before its first step: an empty log and no adapter.
    let empty = dir + "/empty"
    try FileManager.default.createDirectory(atPath: empty + "/checkpoints", withIntermediateDirectories: true)
    try Data().write(to: URL(fileURLWithPath: empty + "/train_log.jsonl"))
    let out = dir + "/page.html"
    let r = try Self.report([broken, empty, runs.lors, "-o", out, "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    let html = try String(contentsOfFile: out, encoding: .utf8)
    let report = try Self.json(r.stdout)
    let jsonRuns = try #require(report["runs"] as? [[String: Any]])
    #expect(jsonRuns[0]["non_finite_steps"] as? [Int] == [3] && jsonRuns[0]["steps_logged"] as? Int == 5)
    #expect(jsonRuns[1]["steps_logged"] as? Int == 0 && (jsonRuns[1]["layers"] as? [Any])?.isEmpty == true && jsonRuns[1]["final_loss"] is NSNull)
    // The broken run's line breaks at step 3 (two subpaths); the empty run has no line, and says why.
    let loss = try Self.slice(html, from: "<svg class=\"chart\" id=\"loss-chart\"", to: "</svg>")
    #expect(loss.contains("data-series=\"2\"") && loss.components(separatedBy: "<path class=\"series\"").count - 1 == 2)
    let path = try Self.slice(loss, from: "data-series=\"diverged\" d=\"", to: "\" fill")
    #expect(path.components(separatedBy: "M").count - 1 == 2, "\(path)")
    #expect(loss.contains("empty (no finite value)"))
    for note in ["1 step(s) with a non-finite loss (step 3)", "the step log is empty", "line 6", "eval-choices.json skipped", "not a perplexity report",
      "no adapter_model.safetensors"] {
      #expect(html.contains(note), "\(note)")
    }
    // The per-layer tables: one each for the two runs with an adapter.
    #expect(html.components(separatedBy: "<table class=\"layers\"").count - 1 == 2)
  }

  @Test func outputIsRefusedWithoutOverwriteAndTheBaseIsFoundOrNamed() throws {
    let runs = try Self.runs()
    let dir = runs.dir + "/out-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let out = dir + "/report.html"
    try "keep me".write(toFile: out, atomically: true, encoding: .utf8)
    let refused = try Self.report([runs.lora, "-o", out])
    #expect(refused.status == 2 && refused.stderr.contains("already exists (pass --overwrite to replace it)"), "\(refused.stderr)")
    #expect(try String(contentsOfFile: out, encoding: .utf8) == "keep me")
    let replaced = try Self.report([runs.lora, "-o", out, "--overwrite"])
    #expect(replaced.status == 0 && replaced.stdout.contains("wrote \(out)"), "\(replaced.stderr)")
    #expect(try String(contentsOfFile: out, encoding: .utf8).hasPrefix("<!DOCTYPE html>"))
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["report.html"], "no temporary file left")
    // The default output name, in the working directory.
    try FileManager.default.createDirectory(atPath: dir + "/cwd", withIntermediateDirectories: true)
    let cwd = try Tools.runExecutable("/bin/sh", ["-c", "cd \"$1\" && \"$2\" report \"$3\" >/dev/null && ls", "sh", dir + "/cwd", Tools.binDirectory + "/espalier", runs.lora])
    #expect(cwd.status == 0 && cwd.stdout == "report.html\n", "\(cwd.stdout)\(cwd.stderr)")

    // A recorded base that is gone: the error names the paths tried; --base gives it.
    let moved = dir + "/moved-run"
    try FileManager.default.copyItem(atPath: runs.lora, toPath: moved)
    let record = try String(contentsOfFile: moved + "/espalier.json", encoding: .utf8)
      .replacingOccurrences(of: "\"base_model\": \"\(runs.base)\"", with: "\"base_model\": \"gone/base\"")
    #expect(record.contains("gone/base"))
    try record.write(toFile: moved + "/espalier.json", atomically: true, encoding: .utf8)
    let missing = try Self.report([moved, "-o", dir + "/missing.html"])
    #expect(missing.status == 2 && missing.stderr.contains("cannot find the base checkpoint") && missing.stderr.contains("gone/base") && missing.stderr.contains("--base"), "\(missing.stderr)")
    #expect(!FileManager.default.fileExists(atPath: dir + "/missing.html"))
    let given = try Self.report([moved, "-o", dir + "/given.html", "--base", runs.base])
    #expect(given.status == 0, "\(given.stderr)")
    // Another base than the run's (the dense model) is refused as merge refuses it.
    let wrong = try Self.report([runs.lora, "-o", dir + "/wrong.html", "--base", Tools.fixtures + "/tiny-llama"])
    #expect(wrong.status == 2 && wrong.stderr.contains("trained on another base"), "\(wrong.stderr)")
    // Not a run at all.
    let notRun = try Self.report([Tools.fixtures + "/tiny-llama", "-o", dir + "/none.html"])
    #expect(notRun.status == 2 && notRun.stderr.contains("is not a training run"), "\(notRun.stderr)")
  }

  @Test func usageAndHelp() throws {
    let help = try Self.report(["--help"])
    #expect(help.status == 0)
    let text = help.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")  // as wrapped for any width
    for flag in ["--output <output>", "(default: report.html)", "--eval <LABEL=FILE>", "--base <base>", "--title <title>", "(default: Espalier report)",
      "--overwrite", "--json", "<RUN_DIR> ..."] {
      #expect(text.contains(flag), "\(flag)")
    }
    #expect(try Self.report([]).status == 64)
    let runs = try Self.runs()
    for bad in [[runs.lora, "--eval", "no-label"], [runs.lora, "--eval", "=file"], [runs.lora, "-o", runs.dir]] {
      let r = try Self.report(bad)
      #expect(r.status == 64, "\(bad): \(r.stderr)")
    }
    let verbs = try Tools.run("espalier", ["--help"])
    #expect(verbs.stdout.contains("  report    one self-contained HTML page"))
  }

  static let chromium: String? = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
    .map { String($0) + "/chromium" }.first { FileManager.default.isExecutableFile(atPath: $0) }

  /// Renders `page` headless: the console lines chromium logged, the DOM after the scripts ran, and the
  /// screenshot's bytes.
  static func render(_ page: String, screenshot: String) throws -> (console: [String], dom: String, png: Data) {
    let profile = reportTestsDirectory + "/chromium-profile-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: profile) }
    try? FileManager.default.removeItem(atPath: screenshot)
    // As root chromium needs --no-sandbox; --enable-logging=stderr prints every console message (any level)
    // and every uncaught exception as an INFO:CONSOLE line; --dump-dom prints the DOM after load.
    let r = try Tools.runExecutable(try #require(chromium), [
      "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir=" + profile, "--enable-logging=stderr",
      "--window-size=1200,2400", "--screenshot=" + screenshot, "--dump-dom", URL(fileURLWithPath: page).absoluteString,
    ])
    #expect(r.status == 0, "\(r.stderr)")
    let console = r.stderr.split(separator: "\n").map(String.init).filter { $0.contains("CONSOLE") || $0.contains("Uncaught") }
    return (console, r.stdout, (try? Data(contentsOf: URL(fileURLWithPath: screenshot))) ?? Data())
  }

  @Test(.enabled(if: chromium != nil, "chromium is not on PATH: `make test` installs Debian's chromium (apt-get install chromium)"))
  func rendersInHeadlessChromiumWithoutConsoleErrors() throws {
    let runs = try Self.runs()
    let page = runs.dir + "/browser-\(UUID().uuidString).html"
    let (html, _) = try Self.twoRunPage(page)
    // The screenshot stays where a person can look at it after the run.
    let screenshot = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-report-screenshot.png").path
    let shown = try Self.render(page, screenshot: screenshot)
    #expect(shown.console.isEmpty, "console: \(shown.console)")
    #expect(shown.dom.contains("data-rendered=\"ok\""), "the page's inline check did not run or failed")
    #expect(shown.png.count > 20_000 && shown.png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), "\(shown.png.count) bytes")

    // The check can fail: a page whose loss chart claims a third series logs a console error, and so
    // does a script error; the test would see both.
    let broken = runs.dir + "/broken-\(UUID().uuidString).html"
    let claimed = try #require(html.range(of: "id=\"loss-chart\" data-series=\"2\""))
    try html.replacingCharacters(in: claimed, with: "id=\"loss-chart\" data-series=\"3\"")
      .replacingOccurrences(of: "</body>", with: "<script>notDefined();</script></body>")
      .write(toFile: broken, atomically: true, encoding: .utf8)
    let failed = try Self.render(broken, screenshot: runs.dir + "/broken.png")
    #expect(failed.console.contains { $0.contains("espalier report: loss-chart: 2 series drawn, 3 expected") }, "\(failed.console)")
    #expect(failed.console.contains { $0.contains("Uncaught ReferenceError") }, "\(failed.console)")
    #expect(failed.dom.contains("data-rendered=\"failed\""))
  }
}
