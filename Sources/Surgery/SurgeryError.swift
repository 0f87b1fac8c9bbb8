// The one error enum of the Surgery module: one case per kind of failure, payloads naming the tensor,
// file or input at fault, and a message that says what happened.

import Formats

public enum SurgeryError: Error, Equatable, Sendable, CustomStringConvertible {
  case invalidPattern(String)
  case shapeMismatch(name: String, expected: [Int], got: [Int])
  case lapack(routine: String, info: Int)
  case checkpoint(path: String, problems: [String])
  case format(FormatError)
  /// A runner was given another number of tokens than its activation arena was planned for.
  case batchShape(planned: String, got: String)
  /// backward() on a runner planned for scoring only, or without a forward pass with targets before it.
  case backwardUnavailable(String)
  /// The calibration text has too few tokens for one window.
  case calibrationTooShort(tokens: Int, windowLength: Int)
  /// Calibration windows must exist and share one length.
  case calibrationWindows(String)
  /// Perplexity needs at least two tokens.
  case textTooShort(tokens: Int)
  /// A multiple-choice item whose context and choice give nothing to score.
  case emptyChoice(item: Int)
  /// Training data that yields no window, or windows of another length than the run's.
  case noTrainingData(path: String, windowLength: Int)
  case windowLength(expected: Int)
  case invalidToken(id: Int, vocabSize: Int)
  case unsupported(String)
  /// Training stopped: a non-finite loss or gradient (the last checkpoint is kept).
  case training(String)
  /// A run cannot resume: no checkpoint, or one made with other settings.
  case resume(String)
  /// An option combination the operation cannot honour.
  case invalidRequest(String)
  /// Even the smallest memory plan exceeds the budget (the message holds the plan).
  case memoryPlan(String)
  /// The MPI job cannot start or a collective failed.
  case cluster(String)

  /// Runs `body`, passing Surgery's errors through and wrapping Formats' (anything else becomes an I/O
  /// error on `path`): for library code that mixes reading and math in one block.
  static func wrapping<R>(_ path: String, _ body: () throws -> R) throws(SurgeryError) -> R {
    do {
      return try body()
    } catch let error as SurgeryError {
      throw error
    } catch let error as FormatError {
      throw .format(error)
    } catch {
      throw .format(.io(file: path, reason: "\(error)"))
    }
  }

  public var description: String {
    switch self {
    case .invalidPattern(let t): return "invalid N:M pattern `\(t)` (expected N:M with 0 <= N <= M, M >= 1, e.g. 2:4)"
    case .shapeMismatch(let n, let e, let g): return "tensor `\(n)`: expected shape \(e), got \(g)"
    case .lapack(let r, let i): return "LAPACK \(r) failed with info = \(i)"
    case .checkpoint(let p, let problems): return "\(p): " + problems.joined(separator: "; ")
    case .format(let e): return e.description
    case .batchShape(let e, let g): return "the activation arena was planned for \(e), not \(g)"
    case .backwardUnavailable(let why): return "no backward pass: \(why)"
    case .calibrationTooShort(let n, let length):
      return "the calibration text has \(n) tokens; windows of \(length) need more (give more text or a smaller --seq-len)"
    case .calibrationWindows(let why): return "calibration windows: \(why)"
    case .textTooShort(let n): return "the text has \(n) tokens; perplexity needs at least 2"
    case .emptyChoice(let i): return "multiple-choice item \(i + 1): the context and a non-empty choice are needed to score it"
    case .noTrainingData(let path, let T):
      return "\(path): no training windows of \(T) tokens (the data is empty, or every example's prompt fills --seq-len)"
    case .windowLength(let T): return "training windows must all be \(T) tokens long"
    case .invalidToken(let id, let v): return "token id \(id) is outside the vocabulary (\(v) tokens)"
    case .unsupported(let what): return what
    case .training(let what): return what
    case .resume(let why): return "--resume: \(why)"
    case .invalidRequest(let why): return why
    case .memoryPlan(let why): return "refusing to start: " + why
    case .cluster(let why): return "MPI: " + why
    }
  }
}
