// The one error enum of the Surgery module; payloads name the tensor or the input at fault.

public enum SurgeryError: Error, Equatable, Sendable, CustomStringConvertible {
  case invalidPattern(String)
  case shapeMismatch(name: String, expected: [Int], got: [Int])
  case lapack(routine: String, info: Int)

  public var description: String {
    switch self {
    case .invalidPattern(let t): return "invalid N:M pattern `\(t)` (expected N:M with 0 <= N <= M, M >= 1, e.g. 2:4)"
    case .shapeMismatch(let n, let e, let g): return "tensor `\(n)`: expected shape \(e), got \(g)"
    case .lapack(let r, let i): return "LAPACK \(r) failed with info = \(i)"
    }
  }
}
