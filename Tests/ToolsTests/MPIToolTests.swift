// The engine tools under Open MPI's mpirun, as a user launches them: -np 2 on the tiny fixture against
// one plain process with the same global batch. Pruning writes the same bytes (Wanda, SparseGPT, OWL: the
// statistics are reduced in a fixed order), perplexity is the same to the bit, the fine-tune loss curve
// agrees to 1e-5 relative and resumes on another number of ranks, rank 0 alone writes and prints, and a
// refusal on any rank ends the job with its exit code. BLAS runs single-threaded in both (OpenBLAS gives
// other low bits at another thread count, whatever MPI does).

import Foundation
import Testing

@testable import Formats

@Suite(.serialized) struct MPIToolTests {
  static let mpirun: String? = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
    .map { String($0) + "/mpirun" }.first { FileManager.default.isExecutableFile(atPath: $0) }

  static func temporaryDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-mpi-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
  }

  static var singleThreaded: [String: String] {
    var environment = ProcessInfo.processInfo.environment
    environment["OPENBLAS_NUM_THREADS"] = "1"
    return environment
  }

  /// `tool` as one plain process (no MPI), BLAS single-threaded.
  static func plain(_ tool: String, _ arguments: [String]) throws -> ToolResult {
    try Tools.run(tool, arguments, environment: singleThreaded)
  }

  /// `tool` as `ranks` MPI ranks on this machine (--oversubscribe: two ranks on CI's two cores and more).
  static func mpi(_ ranks: Int, _ tool: String, _ arguments: [String]) throws -> ToolResult {
    let root = getuid() == 0 ? ["--allow-run-as-root"] : []
    return try Tools.runExecutable(
      try #require(mpirun), root + ["--oversubscribe", "-np", String(ranks), "-x", "OPENBLAS_NUM_THREADS", Tools.binDirectory + "/" + tool] + arguments,
      environment: singleThreaded)
  }

  static func json(_ text: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
  }

  static func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

  static let calibration = ["--calibration", Tools.fixtures + "/tokenizer/prose.txt", "--seq-len", "48", "--json"]

  @Test(
    .enabled(if: mpirun != nil, "mpirun is not on PATH: `make test` installs Debian's openmpi-bin"),
    arguments: [
      ["--method", "wanda", "--sparsity", "0.5", "--nsamples", "8", "--batch-size", "2"],
      ["--method", "sparsegpt", "--pattern", "2:4", "--nsamples", "8", "--batch-size", "2"],
      ["--method", "sparsegpt", "--sparsity", "0.6", "--nsamples", "7", "--batch-size", "1"],
      ["--method", "wanda", "--sparsity", "0.6", "--profile", "owl", "--owl-m", "2", "--nsamples", "6", "--batch-size", "2"],
      // Streamed: every rank widens one block at a time from the checkpoint; rank 0 writes each when pruned.
      ["--method", "sparsegpt", "--sparsity", "0.5", "--nsamples", "4", "--batch-size", "1", "--max-memory", "81.5MB"],
    ])
  func prunedCheckpointIsTheSameBytesOnTwoRanks(flags: [String]) throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let model = Tools.fixtures + "/tiny-llama"
    let one = try Self.plain("espalier-prune", [model, dir + "/one"] + flags + Self.calibration)
    #expect(one.status == 0, "\(one.stderr)")
    let two = try Self.mpi(2, "espalier-prune", [model, dir + "/two"] + flags + Self.calibration)
    #expect(two.status == 0, "\(two.stderr)")
    // The weights, the per-tensor sparsities and OWL's rates: the same bytes.
    if flags.contains("--max-memory") { #expect(two.stderr.contains("streamed: one block at a time"), "\(two.stderr)") }
    var files = ["model.safetensors", "sparsity.json"]
    if flags.contains("owl") { files.append("layer_sparsity.json") }
    for file in files { #expect(try Self.bytes(dir + "/one/" + file) == Self.bytes(dir + "/two/" + file), "\(file) differs") }
    // Rank 0 alone reports: one JSON document on stdout, with the collectives it took part in.
    let report = try Self.json(two.stdout)
    let mpi = try #require(report["mpi"] as? [String: Any])
    #expect(mpi["ranks"] as? Int == 2)
    #expect((mpi["collectives"] as? Int ?? 0) >= 14, "\(mpi)")
    #expect((try Self.json(one.stdout))["mpi"] is NSNull)
    #expect(!two.stderr.contains("rank 1:"), "\(two.stderr)")
  }

  @Test(.enabled(if: mpirun != nil, "mpirun is not on PATH: `make test` installs Debian's openmpi-bin"))
  func perplexityIsTheSameToTheBitOnTwoAndThreeRanks() throws {
    let args = [Tools.fixtures + "/tiny-llama", "--text", Tools.fixtures + "/tokenizer/prose.txt", "--seq-len", "64", "--limit", "9", "--batch-size", "2", "--json"]
    let one = try Self.plain("espalier-eval", args)
    #expect(one.status == 0, "\(one.stderr)")
    let exact = try #require(try Self.json(one.stdout)["nll_exact"] as? Double)
    for ranks in [2, 3] {
      let r = try Self.mpi(ranks, "espalier-eval", args)
      #expect(r.status == 0, "\(r.stderr)")
      let report = try Self.json(r.stdout)
      #expect(report["nll_exact"] as? Double == exact, "\(r.stdout)")
      #expect(report["windows"] as? Int == 9, "\(r.stdout)")
      #expect((report["mpi"] as? [String: Any])?["ranks"] as? Int == ranks)
    }
  }

  @Test(.enabled(if: mpirun != nil, "mpirun is not on PATH: `make test` installs Debian's openmpi-bin"))
  func multipleChoiceCountsAreSummedOverRanks() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let items = (0..<7).map { i in "{\"context\": \"Item \(i): the\", \"choices\": [\" cat\", \" dog\", \" end of it\"], \"label\": \(i % 3)}" }
    try (items.joined(separator: "\n") + "\n").write(toFile: dir + "/choices.jsonl", atomically: true, encoding: .utf8)
    let args = [Tools.fixtures + "/tiny-llama", "--choices", dir + "/choices.jsonl", "--json"]
    let one = try Self.json(try Self.plain("espalier-eval", args).stdout)
    let two = try Self.mpi(2, "espalier-eval", args)
    #expect(two.status == 0, "\(two.stderr)")
    let report = try Self.json(two.stdout)
    for key in ["items", "acc", "acc_norm"] { #expect("\(report[key] ?? "")" == "\(one[key] ?? "-")", "\(key)") }
  }

  /// Losses of a run's train_log.jsonl, by step.
  static func losses(_ out: String) throws -> [Double] {
    let log = try String(contentsOfFile: out + "/train_log.jsonl", encoding: .utf8)
    return try log.split(separator: "\n").map { try #require(try Self.json(String($0))["loss"] as? Double) }
  }

  static func finetune(_ out: String, _ extra: [String]) -> [String] {
    [Tools.fixtures + "/tiny-llama", "--data", Tools.fixtures + "/tokenizer/prose.txt", "--output", out, "--seq-len", "32",
      "--rank", "4", "--lr", "1e-3", "--init-samples", "8", "--steps", "6", "--save-every", "3", "--json"] + extra
  }

  /// Two ways to share a global batch of 4: whole micro-batches (2 x 2 accumulated), or half of one
  /// micro-batch of 4 each.
  @Test(
    .enabled(if: mpirun != nil, "mpirun is not on PATH: `make test` installs Debian's openmpi-bin"),
    arguments: [["--batch-size", "2", "--grad-accum", "2"], ["--batch-size", "4", "--grad-accum", "1"]])
  func fineTuneLossCurveAgreesOnTwoRanksAndResumesOnOne(batch: [String]) throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let one = try Self.plain("espalier-finetune", Self.finetune(dir + "/one", batch))
    #expect(one.status == 0, "\(one.stderr)")
    let two = try Self.mpi(2, "espalier-finetune", Self.finetune(dir + "/two", batch))
    #expect(two.status == 0, "\(two.stderr)")
    let (a, b) = (try Self.losses(dir + "/one"), try Self.losses(dir + "/two"))
    #expect(a.count == 6 && b.count == 6, "rank 0 alone logs each step once: \(two.stderr)")
    for (x, y) in zip(a, b) { #expect(abs(x - y) <= 1e-5 * abs(x), "loss \(x) on one process, \(y) on two ranks") }
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/two/checkpoints").sorted() == ["step-000003", "step-000006"])
    #expect(FileManager.default.fileExists(atPath: dir + "/two/adapter_model.safetensors"))

    // Interrupted after step 3 on two ranks, resumed on one plain process: the same curve.
    try FileManager.default.copyItem(atPath: dir + "/two", toPath: dir + "/resumed")
    for name in ["checkpoints/step-000006", "adapter_model.safetensors", "adapter_config.json", "espalier.json"] {
      try FileManager.default.removeItem(atPath: dir + "/resumed/" + name)
    }
    let resumed = try Self.plain("espalier-finetune", Self.finetune(dir + "/resumed", batch + ["--resume"]))
    #expect(resumed.status == 0, "\(resumed.stderr)")
    let c = try Self.losses(dir + "/resumed")
    #expect(c.count == 6)
    for (x, y) in zip(a, c) { #expect(abs(x - y) <= 1e-5 * abs(x), "loss \(x) on one process, \(y) resumed") }
  }

  @Test(.enabled(if: mpirun != nil, "mpirun is not on PATH: `make test` installs Debian's openmpi-bin"))
  func aRefusalOnAnyRankEndsTheJobWithItsExitCodeAndNoOutput() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    // One calibration batch cannot be shared by two ranks.
    let prune = try Self.mpi(
      2, "espalier-prune", [Tools.fixtures + "/tiny-llama", dir + "/out", "--method", "wanda", "--sparsity", "0.5", "--nsamples", "2"] + Self.calibration)
    #expect(prune.status == 64, "\(prune.stderr)")
    #expect(prune.stderr.contains("2 ranks share 1 calibration batches"), "\(prune.stderr)")
    #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
    // A global batch of 3 x 1 cannot be split between two ranks: refused before any work.
    let tune = try Self.mpi(2, "espalier-finetune", Self.finetune(dir + "/tuned", ["--batch-size", "3", "--grad-accum", "1"]))
    #expect(tune.status == 64, "\(tune.stderr)")
    #expect(tune.stderr.contains("make --grad-accum or --batch-size a multiple of 2"), "\(tune.stderr)")
    #expect(!tune.stderr.contains("init: gradients"), "\(tune.stderr)")
    #expect(!FileManager.default.fileExists(atPath: dir + "/tuned"))
  }

  /// The README's Slurm batch scripts, run by bash on this machine as 2 ranks of one "node" on the
  /// fixture: prune, then tune the pruned model, then evaluate it.
  @Test(.enabled(if: mpirun != nil, "mpirun is not on PATH: `make test` installs Debian's openmpi-bin"))
  func slurmBatchScriptsRunUnderMpirun() throws {
    let dir = try Self.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var url = URL(fileURLWithPath: Tools.fixtures)
    url.deleteLastPathComponent()
    let scripts = url.appendingPathComponent("examples/slurm").path
    var environment = ProcessInfo.processInfo.environment
    environment["PATH"] = Tools.binDirectory + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
    environment["RANKS_PER_NODE"] = "2"
    environment["MPIRUN_FLAGS"] = (getuid() == 0 ? "--allow-run-as-root " : "") + "--oversubscribe"
    let runs: [(String, [String: String])] = [
      ("prune", ["MODEL": Tools.fixtures + "/tiny-llama", "OUT": dir + "/pruned", "CALIBRATION": Tools.fixtures + "/tokenizer/prose.txt",
        "NSAMPLES": "8", "SEQ_LEN": "48"]),
      ("finetune", ["MODEL": dir + "/pruned", "DATA": Tools.fixtures + "/tokenizer/prose.txt", "OUT": dir + "/tuned", "STEPS": "4",
        "BATCH": "2", "ACCUM": "2", "SEQ_LEN": "32", "SAVE_EVERY": "2"]),
      ("eval", ["MODEL": dir + "/pruned", "TEXT": Tools.fixtures + "/tokenizer/prose.txt", "SEQ_LEN": "64"]),
    ]
    for (name, settings) in runs {
      let report = dir + "/\(name).json"
      let r = try Tools.runExecutable(
        "/bin/bash", [scripts + "/\(name).sbatch"], environment: environment.merging(settings.merging(["REPORT": report]) { $1 }) { $1 })
      #expect(r.status == 0, "\(name): \(r.stderr)")
      let json = try Self.json(String(decoding: try Self.bytes(report), as: UTF8.self))
      #expect((json["mpi"] as? [String: Any])?["ranks"] as? Int == 2, "\(name)")
    }
    #expect(try Self.losses(dir + "/tuned").count == 4)
  }
}

/// What a launcher's environment does without mpirun (no Open MPI needed): a missing or foreign MPI library
/// is named, and the tools that share no work refuse to run as several ranks.
@Suite struct MPIEnvironmentTests {
  static func environment(_ extra: [String: String]) -> [String: String] {
    ProcessInfo.processInfo.environment.merging(extra) { $1 }
  }

  static let eval = [Tools.fixtures + "/tiny-llama", "--text", Tools.fixtures + "/tokenizer/prose.txt", "--seq-len", "32", "--limit", "2"]

  @Test func aMissingMPILibraryIsNamed() throws {
    let r = try Tools.run(
      "espalier-eval", Self.eval,
      environment: Self.environment(["OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1", "ESPALIER_MPI_LIBRARY": "/nonexistent/libmpi.so.40"]))
    #expect(r.status == 2, "\(r.stderr)")
    #expect(r.stderr.contains("no MPI library loads") && r.stderr.contains("/nonexistent/libmpi.so.40"), "\(r.stderr)")
    #expect(r.stdout.isEmpty)
  }

  @Test func aLibraryThatIsNotOpenMPIIsRefused() throws {
    let r = try Tools.run(
      "espalier-eval", Self.eval,
      environment: Self.environment(["PMIX_RANK": "0", "ESPALIER_MPI_LIBRARY": "libzstd.so.1"]))
    #expect(r.status == 2, "\(r.stderr)")
    #expect(r.stderr.contains("has no symbol ompi_mpi_comm_world"), "\(r.stderr)")
  }

  @Test(arguments: ["espalier-convert", "espalier-merge", "espalier-report"])
  func writersRefuseToRunAsSeveralRanks(tool: String) throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("espalier-ranks-\(UUID().uuidString)").path
    let arguments: [String] =
      switch tool {
      case "espalier-convert": [Tools.fixtures + "/tiny-llama", dir + "/out"]
      case "espalier-merge": [Tools.fixtures + "/tiny-llama", dir + "/adapter", dir + "/out"]
      default: [dir + "/run", "-o", dir + "/out"]
      }
    let r = try Tools.run(tool, arguments, environment: Self.environment(["OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"]))
    #expect(r.status == 64, "\(r.stderr)")
    #expect(r.stderr.contains("not as 2 MPI ranks"), "\(r.stderr)")
    #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
  }
}
