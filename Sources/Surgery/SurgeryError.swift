// The one error enum of the Surgery module; payloads name the tensor or the input at fault.

import Formats

public enum SurgeryError: Error, Equatable, Sendable, CustomStringConvertible {
  case invalidPattern(String)
  case shapeMismatch(name: String, expected: [Int], got: [Int])
  case lapack(routine: String, info: Int)
  case checkpoint(path: String, problems: [String])
  case format(FormatError)
  case batchShape(expected: String, got: String)
  case invalidToken(id: Int, vocabSize: Int)
  case unsupported(String)
  case training(String)

  public var description: String {
    switch self {
    case .invalidPattern(let t): return "invalid N:M pattern `\(t)` (expected N:M with 0 <= N <= M, M >= 1, e.g. 2:4)"
    case .shapeMismatch(let n, let e, let g): return "tensor `\(n)`: expected shape \(e), got \(g)"
    case .lapack(let r, let i): return "LAPACK \(r) failed with info = \(i)"
    case .checkpoint(let p, let problems): return "\(p): " + problems.joined(separator: "; ")
    case .format(let e): return e.description
    case .batchShape(let e, let g): return "the activation arena was planned for \(e), not \(g)"
    case .invalidToken(let id, let v): return "token id \(id) is outside the vocabulary (\(v) tokens)"
    case .unsupported(let what): return what
    case .training(let what): return what
    }
  }
}
