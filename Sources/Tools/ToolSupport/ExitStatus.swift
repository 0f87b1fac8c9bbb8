// Exit codes shared by every tool: 0 success, 1 a failed check, 2 unreadable input, 3 the memory plan
// does not fit the budget, 64 usage (ArgumentParser's code for validation errors).

import ArgumentParser
import Surgery

public enum ExitStatus {
  public static let success = ExitCode.success
  public static let checkFailed = ExitCode(1)
  public static let unreadableInput = ExitCode(2)
  public static let doesNotFit = ExitCode(3)
  public static let usage = ExitCode.validationFailure
}

/// Runs a tool body: library errors become one clear message on stderr and an exit code: 1 for
/// training that stopped, 64 for a request the library refused, 2 for everything else (unreadable input).
/// Under MPI, every rank ends its use of MPI after a successful body; a rank that fails exits without it,
/// and the launcher ends the job with that rank's exit code.
public func runReportingErrors(_ body: () throws -> Void) throws {
  do {
    try body()
    ClusterLaunch.finish()
  } catch let exit as ExitCode {
    throw exit
  } catch let error as ValidationError {
    throw error
  } catch let error as SurgeryError {
    Log.error("\(error)")
    switch error {
    case .training: throw ExitStatus.checkFailed
    case .resume, .invalidRequest: throw ExitStatus.usage
    case .memoryPlan: throw ExitStatus.doesNotFit
    default: throw ExitStatus.unreadableInput
    }
  } catch {
    Log.error("\(error)")
    throw ExitStatus.unreadableInput
  }
}
