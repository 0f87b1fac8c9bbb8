// Whether a tool runs as one rank of an MPI job, and what that changes at the front door: the MPI library
// is loaded only then (`Cluster.mpi`), the cores of a machine are shared among the ranks on it, rank 0
// alone prints (the others print only their errors, prefixed with their rank), and every rank ends the
// job's use of MPI when its work is done.

import Formats
import Foundation
import Surgery

public enum ClusterLaunch {
  nonisolated(unsafe) public private(set) static var current: Cluster?

  static var environment: [String: String] { ProcessInfo.processInfo.environment }

  /// This process's rank as the launcher set it (Open MPI's mpirun, PMIx under srun, or PMI), before
  /// MPI is loaded; nil when not launched as part of an MPI job.
  public static var environmentRank: Int? {
    for key in ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"] { if let v = environment[key], let r = Int(v) { return r } }
    return nil
  }

  /// Ranks the launcher started, where it says so.
  static var environmentSize: Int? {
    for key in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"] { if let v = environment[key], let n = Int(v) { return n } }
    return nil
  }

  /// Ranks on this machine: Open MPI's local size, else Slurm's tasks on this node ("2(x3)" → 2), else 1.
  static var ranksOnThisMachine: Int {
    if let v = environment["OMPI_COMM_WORLD_LOCAL_SIZE"], let n = Int(v), n > 0 { return n }
    if let v = environment["SLURM_STEP_TASKS_PER_NODE"] ?? environment["SLURM_TASKS_PER_NODE"], let n = Int(v.prefix { $0.isNumber }), n > 0 {
      return n
    }
    return 1
  }

  /// The cores this process may run on (its CPU affinity: Cpus_allowed in /proc/self/status, a hex mask
  /// in comma-separated words), or nil where it cannot be read.
  static var coresAllowed: Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
      let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") })
    else { return nil }
    let digits = line.dropFirst("Cpus_allowed:".count).filter { $0.isHexDigit }
    let count = digits.reduce(0) { $0 + (Int(String($1), radix: 16) ?? 0).nonzeroBitCount }
    return count > 0 ? count : nil
  }

  /// BLAS threads of a rank: OPENBLAS_NUM_THREADS when set; else the cores the launcher bound it to
  /// (Open MPI binds each rank to one core when there are at most 2 ranks, to a socket beyond: threads past
  /// them would only share those cores); else, unbound, the machine's cores shared among its ranks.
  static func threadsPerRank(environment: [String: String], cores: Int, allowed: Int?, ranksHere: Int) -> Int {
    if let n = environment["OPENBLAS_NUM_THREADS"].flatMap({ Int($0) }), n > 0 { return n }
    if let allowed, allowed > 0, allowed < cores { return allowed }
    return max(1, cores / max(1, ranksHere))
  }

  /// One process, or this rank of the MPI job the launcher started. Under MPI: BLAS threads per rank as
  /// `threadsPerRank` says.
  public static func start() throws -> Cluster {
    if let current { return current }
    guard environmentRank != nil else {
      current = .single
      return .single
    }
    let cluster = try Cluster.mpi(library: environment["ESPALIER_MPI_LIBRARY"])
    if let expected = environmentSize, expected != cluster.size {
      throw SurgeryError.cluster(
        "the launcher started \(expected) ranks but the MPI library sees \(cluster.size): is it the MPI that mpirun or srun belongs to? (ESPALIER_MPI_LIBRARY names another)")
    }
    let cores = ProcessInfo.processInfo.activeProcessorCount
    let allowed = coresAllowed
    let threads = threadsPerRank(environment: environment, cores: cores, allowed: allowed, ranksHere: ranksOnThisMachine)
    BLASThreads.set(threads)
    if !cluster.isRoot {
      Log.quiet(prefix: "rank \(cluster.rank): ")
      Output.silent = true
    }
    let bound = allowed.map { $0 < cores ? ", bound to \($0) of \(cores) cores" : "" } ?? ""
    Log.info("MPI: \(cluster.size) ranks, \(ranksOnThisMachine) on this machine\(bound), \(threads) BLAS threads each")
    if let allowed, allowed < cores, threads > allowed {
      Log.warning(
        "OPENBLAS_NUM_THREADS=\(threads) on the \(allowed) core(s) this rank is bound to: the threads share them (mpirun --bind-to none, or --map-by slot:PE=\(threads))")
    }
    current = cluster
    return cluster
  }

  /// A tool that writes one output and shares no work refuses to be one of several ranks: each would
  /// write it (and to the same path).
  public static func refuseSeveralRanks(_ tool: String) throws {
    guard let size = environmentSize, size > 1 else { return }
    throw SurgeryError.invalidRequest(
      "\(tool) runs once, not as \(size) MPI ranks: start it without mpirun or srun (prune, eval and finetune are the tools that share their work across ranks)")
  }

  /// Ends this rank's use of MPI after a successful run (a no-op in one process).
  public static func finish() {
    guard let current, current.isDistributed else { return }
    Log.info(
      "MPI: \(current.collectives) collectives, \(Format.bytes(current.collectiveBytes)) reduced or broadcast, "
        + "\(Format.fixed(current.collectiveSeconds, 2)) s in them (rank 0)")
    current.finish()
  }

  /// The "mpi" member of a tool's --json report: null in one process, else the ranks and what the
  /// collectives cost this rank (0) so far.
  public static var json: JSONValue {
    guard let c = current, c.isDistributed else { return .null }
    return .object(JSONObject([
      ("ranks", .number(String(c.size))), ("collectives", .number(String(c.collectives))),
      ("collective_bytes", .number(String(c.collectiveBytes))), ("collective_seconds", .number(Format.fixed(c.collectiveSeconds, 4))),
    ]))
  }
}
