// espalier: dispatches `espalier VERB ARGS…` to the executable `espalier-VERB`, found beside this binary
// or on PATH, as git does. The verb's exit status becomes ours.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

let verbs = [
  ("convert", "convert safetensors / GGUF / HDF5 checkpoints to safetensors or HDF5, or compress sparse ones"),
  ("eval", "perplexity on a text, or multiple-choice accuracy, of a checkpoint"),
  ("finetune", "LoRS (or LoRA, SQFT, SPP) adapters trained on a sparse model without leaving its mask"),
  ("generate", "continue a prompt with a checkpoint (KV cache; greedy or sampled), streaming the text"),
  ("inspect", "list tensors, sizes, sparsity and N:M conformance of a checkpoint"),
  ("merge", "merge an adapter into its base under the mask, refusing a mismatched base"),
  ("prune", "magnitude, Wanda or SparseGPT pruning, unstructured or N:M, calibrated layer by layer"),
  ("report", "one self-contained HTML page of training runs: loss curves, per-layer sparsity and change, perplexity"),
  ("verify", "CI gate: integrity, sparsity and N:M, the base's zero set kept, an adapter merged exactly"),
]

/// Writes text to a file descriptor (1 stdout, 2 stderr) without the C stdio globals.
func emit(_ text: String, fd: Int32) {
  var bytes = Array(text.utf8)
  _ = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
}

func printUsage(fd: Int32) {
  var text = "usage: espalier <command> [arguments]\n       espalier help <command>\n\ncommands:\n"
  for (verb, summary) in verbs { text += "  " + verb.padding(10) + summary + "\n" }
  text += "\nEach command is a program of its own, espalier-<command>; `espalier <command> --help` explains its flags.\n"
  emit(text, fd: fd)
}

extension String {
  func padding(_ width: Int) -> String { self + String(repeating: " ", count: max(1, width - count)) }
}

/// The directory of the running executable (resolving /proc/self/exe), or nil.
func ownDirectory() -> String? {
  var buffer = [CChar](repeating: 0, count: 4096)
  let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
  guard n > 0 else { return nil }
  let path = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  guard let slash = path.lastIndex(of: "/") else { return nil }
  return String(path[..<slash])
}

func findExecutable(_ name: String) -> String? {
  var candidates: [String] = []
  if let dir = ownDirectory() { candidates.append(dir + "/" + name) }
  if let path = getenv("PATH") {
    for dir in String(cString: path).split(separator: ":") where !dir.isEmpty { candidates.append("\(dir)/\(name)") }
  }
  return candidates.first { access($0, X_OK) == 0 }
}

var arguments = Array(CommandLine.arguments.dropFirst())
guard let verb = arguments.first else {
  printUsage(fd: 2)
  exit(64)
}
switch verb {
case "-h", "--help":
  printUsage(fd: 1)
  exit(0)
case "help":
  guard arguments.count > 1 else {
    printUsage(fd: 1)
    exit(0)
  }
  arguments = [arguments[1], "--help"]
default:
  break
}
let command = "espalier-" + arguments[0]
guard !arguments[0].hasPrefix("-"), let executable = findExecutable(command) else {
  emit("espalier: '\(arguments[0])' is not an espalier command (no \(command) beside espalier or on PATH)\n\n", fd: 2)
  printUsage(fd: 2)
  exit(64)
}
var argv: [UnsafeMutablePointer<CChar>?] = ([command] + arguments.dropFirst()).map { strdup($0) } + [nil]
execv(executable, &argv)
emit("espalier: cannot run \(executable): \(String(cString: strerror(errno)))\n", fd: 2)
exit(126)
