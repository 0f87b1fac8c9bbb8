// libFuzzer entry point for the HDF5 reader (Sources/Formats/HDF5, over the system libhdf5). Built by
// fuzz/build.sh against the instrumented Formats module; libhdf5 itself is not instrumented, so only
// the Swift side gets coverage feedback (ASan still sees libhdf5's heap, through its malloc).
//
// HDF5Checkpoint opens files by path only, so each input is written to a fresh scratch file in /dev/shm
// (a fresh name each time: libhdf5 shares an open file by name, and a handle left open by an error path
// would otherwise hand the next input the previous file).
//
// Properties checked on every input:
//  1. HDF5Checkpoint(path:) never traps: it lists tensors or throws a FormatError;
//  2. every listed tensor has a byte count (no overflow), and reading one of at most 64 MiB either
//     throws or gives exactly the listed dtype and shape; small float tensors widen to f32;
//  3. a fault inside libhdf5 itself (libhdf5 1.10 trusts corrupt metadata; some bit-flipped files crash
//     its own h5dump) ends the way the tools end it: exit 2 from the crash guard or the attribute
//     watchdog (HDF5Library.guarded), never a signal.
//
// How 3 is checked: each input is first read in a forked child with the guard on, as in the tools. A
// fault inside libhdf5 (a signal, or an AddressSanitizer report from inside libhdf5, while the guard is
// armed) ends the child with the guard's exit 2: contained, and the input is done. Anything else that ends the child
// early (a trap or sanitizer report in our code, a fault with the guard unarmed) is a crash of the
// target. A child that finishes cleanly is read again in the fuzzer's own process with the guard off,
// which gives libFuzzer the coverage (a child's counters are lost with it) and keeps its timeouts; the
// read is deterministic, so it does what the child did.

@testable import Formats

#if canImport(Glibc)
  import Glibc
#endif

private let readLimit = 64 << 20
nonisolated(unsafe) private var counter = 0

@_cdecl("LLVMFuzzerInitialize")
public func initializeHDF5(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
  // No flock() on scratch files (and no failures on file systems without it).
  setenv("HDF5_USE_FILE_LOCKING", "FALSE", 1)
  return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHDF5(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = UnsafeRawBufferPointer(start: data, count: size)
  counter += 1
  let path = Scratch.path("hdf5", "-\(counter).h5")
  Scratch.write(bytes, to: path)
  defer { Scratch.remove(path) }
  if readsCleanlyInChild(path) { check(path) }
  return 0
}

/// AddressSanitizer calls this before it ends a process on a report.
@_silgen_name("__sanitizer_set_death_callback")
private func setSanitizerDeathCallback(_ callback: @convention(c) () -> Void)

/// The guarded reader: a child forked once (and again after each fault it contained), which reads the
/// paths sent to it one per line and answers each with a byte. Forking per input cost 60 ms (copying the
/// sanitizer's page tables); a long-lived child costs a pipe round trip.
private struct GuardedReader {
  var pid: pid_t
  var requests: CInt
  var replies: CInt
}

nonisolated(unsafe) private var guardedReader: GuardedReader?
nonisolated(unsafe) private var contained = 0

/// Reads `path` in the guarded child. True when it read it cleanly; false when the guard contained a
/// fault inside libhdf5 (the child ended with exit 2). Anything else crashes the target, with the
/// child's status, so that libFuzzer saves this input.
private func readsCleanlyInChild(_ path: String) -> Bool {
  let reader = guardedReader ?? startGuardedReader()
  guardedReader = reader
  var line = Array((path + "\n").utf8)
  let sent = line.withUnsafeMutableBytes { write(reader.requests, $0.baseAddress, $0.count) } == line.count
  var answer: UInt8 = 0
  if sent {
    while true {
      let n = read(reader.replies, &answer, 1)
      if n == 1 { return true }
      if n < 0 && errno == EINTR { continue }
      break
    }
  }
  // The child is gone: a contained fault, or a crash.
  close(reader.requests)
  close(reader.replies)
  guardedReader = nil
  var status: CInt = 0
  while waitpid(reader.pid, &status, 0) < 0 {
    guard errno == EINTR else { fatalError("fuzz harness: waitpid failed (errno \(errno))") }
  }
  let signal = status & 0x7f
  let exitCode = (status >> 8) & 0xff
  if signal == 0 && exitCode == 2 {
    // ESPALIER_FUZZ_KEEP_CONTAINED=DIR keeps the inputs whose faults the guard contained, to study them.
    if let keep = getenv("ESPALIER_FUZZ_KEEP_CONTAINED") {
      contained += 1
      _ = link(path, String(cString: keep) + "/contained-\(getpid())-\(contained).h5")
    }
    return false
  }
  propertyFailed(signal != 0 ? "the reader died of signal \(signal) outside the crash guard" : "the reader exited with \(exitCode) outside the crash guard")
}

private func startGuardedReader() -> GuardedReader {
  // A write to a child that has just ended must fail with EPIPE, not kill the fuzzer.
  signal(SIGPIPE, SIG_IGN)
  var requests: [CInt] = [0, 0]
  var replies: [CInt] = [0, 0]
  guard pipe(&requests) == 0, pipe(&replies) == 0 else { fatalError("fuzz harness: pipe failed (errno \(errno))") }
  let child = fork()
  guard child >= 0 else { fatalError("fuzz harness: fork failed (errno \(errno))") }
  if child > 0 {
    close(requests[0])
    close(replies[1])
    return GuardedReader(pid: child, requests: requests[1], replies: replies[0])
  }
  close(requests[1])
  close(replies[0])
  // libFuzzer's handlers would save the input the parent had when it forked: a fault of ours outside
  // the guard ends this child by its signal, and the parent saves the right input.
  for fault in [SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP] { signal(fault, SIG_DFL) }
  // A sanitizer report from inside an armed libhdf5 call about libhdf5's own memory is a fault of
  // libhdf5's metadata code (no tensor byte passes through libhdf5 any more: HDF5Chunks.read and the
  // contiguous read take them from the file). Where it would fault without the sanitizer, the guard's
  // signal handler ends the tool with exit 2; where it would not (an over-read, an overlapping copy),
  // libhdf5 hands back metadata that the reader checks against the file (sizes, the chunk index,
  // offsets) before it reads a tensor. End as the tools would. A report about memory our Swift code
  // allocated (libhdf5 writing past a buffer we sized) is our bug, and every report from our code is
  // too: those end the child with the sanitizer's exit code (1), a crash of the target.
  setSanitizerDeathCallback {
    guard HDF5Library.guardArmed, reportIsFromLibHDF5(), !reportedMemoryIsOurs() else { return }
    let message = HDF5Library.guardMessage
    _ = message.withCString { write(2, $0, strlen($0)) }
    _exit(2)
  }
  HDF5Library.guardsEnabled = true
  var pending: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 4096)
  while true {
    let n = read(requests[0], &buffer, buffer.count)
    if n < 0 && errno == EINTR { continue }
    guard n > 0 else { _exit(0) }  // the fuzzer is gone
    pending += buffer[0..<n]
    while let newline = pending.firstIndex(of: 10) {
      check(String(decoding: pending[..<newline], as: UTF8.self))
      pending.removeSubrange(...newline)
      var done: UInt8 = 1
      guard write(replies[1], &done, 1) == 1 else { _exit(0) }
    }
  }
}

private func check(_ path: String) {
  guard let checkpoint = try? HDF5Checkpoint(path: path) else { return }
  for info in checkpoint.infos {
    guard let byteCount = info.byteCount else { propertyFailed("listed tensor `\(info.name)` \(info.shape) has no byte count") }
    guard byteCount <= readLimit, let tensor = try? checkpoint.tensor(info.name) else { continue }
    guard tensor.info == info, tensor.byteCount == byteCount else {
      propertyFailed("tensor `\(info.name)` reads as \(tensor.info) (\(tensor.byteCount) bytes), listed as \(info)")
    }
    if info.dtype.convertsToFloat32, tensor.elementCount <= 1 << 16 {
      guard let values = try? tensor.float32(), values.count == tensor.elementCount else {
        propertyFailed("widening `\(info.name)` failed")
      }
    }
  }
}

/// Whether the sanitizer report being made comes from inside libhdf5: walking out from the report, a
/// frame of libhdf5 comes before any frame of our Swift code (a fault in a Swift callback that libhdf5
/// called, H5Literate's, is ours). The sanitizer's own frames carry C names and are passed over.
private func reportIsFromLibHDF5() -> Bool {
  var frames = [UnsafeMutableRawPointer?](repeating: nil, count: 128)
  let count = Int(captureBacktrace(&frames, CInt(frames.count)))
  return owner(of: frames.prefix(count)) == .libhdf5
}

/// Whether the memory a report is about was allocated by our Swift code: libhdf5 writing past a buffer we
/// sized is our bug, even though the write happens inside libhdf5.
private func reportedMemoryIsOurs() -> Bool {
  guard asanReportPresent() != 0, let address = asanReportAddress() else { return false }
  var frames = [UnsafeMutableRawPointer?](repeating: nil, count: 128)
  var thread: CInt = 0
  let count = asanAllocationStack(address, &frames, frames.count, &thread)
  return owner(of: frames.prefix(count)) == .swift
}

private enum FrameOwner { case libhdf5, swift, unknown }

/// Who owns the innermost frame that is either libhdf5's or Swift's (mangled `$s…`), walking outwards.
private func owner(of frames: ArraySlice<UnsafeMutableRawPointer?>) -> FrameOwner {
  for frame in frames {
    var info = SharedObjectInfo()
    guard dladdr(frame, &info) != 0 else { continue }
    if let object = info.dli_fname, strstr(object, "libhdf5") != nil { return .libhdf5 }
    if let symbol = info.dli_sname, strncmp(symbol, "$s", 2) == 0 { return .swift }
  }
  return .unknown
}

@_silgen_name("__asan_report_present")
private func asanReportPresent() -> CInt

@_silgen_name("__asan_get_report_address")
private func asanReportAddress() -> UnsafeMutableRawPointer?

@_silgen_name("__asan_get_alloc_stack")
private func asanAllocationStack(
  _ address: UnsafeMutableRawPointer, _ trace: UnsafeMutablePointer<UnsafeMutableRawPointer?>, _ size: Int,
  _ thread: UnsafeMutablePointer<CInt>
) -> Int


/// glibc's Dl_info (dlfcn.h declares it and dladdr only under _GNU_SOURCE, which the Glibc module lacks).
private struct SharedObjectInfo {
  var dli_fname: UnsafePointer<CChar>? = nil
  var dli_fbase: UnsafeMutableRawPointer? = nil
  var dli_sname: UnsafePointer<CChar>? = nil
  var dli_saddr: UnsafeMutableRawPointer? = nil
}

@_silgen_name("dladdr")
private func dladdr(_ address: UnsafeMutableRawPointer?, _ info: UnsafeMutablePointer<SharedObjectInfo>) -> CInt

@_silgen_name("backtrace")
private func captureBacktrace(_ frames: UnsafeMutablePointer<UnsafeMutableRawPointer?>, _ size: CInt) -> CInt
