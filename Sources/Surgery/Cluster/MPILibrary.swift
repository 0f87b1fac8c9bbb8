// The MPI library, opened at run time (dlopen) only when a tool runs under MPI: a machine without Open MPI
// builds and runs everything, and no build-time option splits the tools in two. The few calls the
// Cluster needs are bound by name with their C signatures (mpi.h of Open MPI 4 and 5):
//   int MPI_Init_thread(int *argc, char ***argv, int required, int *provided)
//   int MPI_Comm_rank(MPI_Comm, int *), MPI_Comm_size(MPI_Comm, int *)
//   int MPI_Send(const void *, int count, MPI_Datatype, int dest, int tag, MPI_Comm)
//   int MPI_Recv(void *, int count, MPI_Datatype, int source, int tag, MPI_Comm, MPI_Status *)
//   int MPI_Bcast(void *, int count, MPI_Datatype, int root, MPI_Comm), MPI_Barrier(MPI_Comm)
//   int MPI_Finalize(void), MPI_Abort(MPI_Comm, int errorcode)
// Open MPI's handles are addresses of global objects: MPI_COMM_WORLD is &ompi_mpi_comm_world and
// MPI_BYTE &ompi_mpi_byte, so dlsym gives them directly; MPI_STATUS_IGNORE is NULL. (MPICH's handles are
// integers, another ABI: it is refused by name.) Messages go as bytes, at most 1 GiB per call (MPI's
// counts are 32-bit ints).

import Foundation

#if canImport(Glibc)
  import Glibc
#endif

final class MPILibrary: @unchecked Sendable {
  typealias Handle = UnsafeMutableRawPointer
  private typealias InitThread = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, Int32, UnsafeMutablePointer<Int32>) -> Int32
  private typealias CommQuery = @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
  private typealias Send = @convention(c) (UnsafeRawPointer, Int32, Handle, Int32, Int32, Handle) -> Int32
  private typealias Recv = @convention(c) (UnsafeMutableRawPointer, Int32, Handle, Int32, Int32, Handle, UnsafeMutableRawPointer?) -> Int32
  private typealias Bcast = @convention(c) (UnsafeMutableRawPointer, Int32, Handle, Int32, Handle) -> Int32
  private typealias CommCall = @convention(c) (Handle) -> Int32
  private typealias Finalize = @convention(c) () -> Int32
  private typealias Abort = @convention(c) (Handle, Int32) -> Int32

  /// The names tried when no library is given: Open MPI's soname, then the development link.
  static let defaultNames = ["libmpi.so.40", "libmpi.so"]
  /// The largest message of one call.
  static let maxMessage = 1 << 30

  let path: String
  private let world: Handle
  private let byte: Handle
  private let initThread: InitThread
  private let commRank: CommQuery
  private let commSize: CommQuery
  private let sendCall: Send
  private let recvCall: Recv
  private let bcastCall: Bcast
  private let barrierCall: CommCall
  private let finalizeCall: Finalize
  private let abortCall: Abort
  private let tag: Int32 = 1913

  private init(path: String, handle: UnsafeMutableRawPointer) throws(SurgeryError) {
    func symbol(_ name: String) throws(SurgeryError) -> UnsafeMutableRawPointer {
      guard let p = dlsym(handle, name) else {
        throw .cluster("\(path) has no symbol \(name): Espalier speaks Open MPI's ABI (Debian's openmpi-bin, libopenmpi-dev; Open MPI 4 or 5)")
      }
      return p
    }
    self.path = path
    world = try symbol("ompi_mpi_comm_world")
    byte = try symbol("ompi_mpi_byte")
    initThread = unsafeBitCast(try symbol("MPI_Init_thread"), to: InitThread.self)
    commRank = unsafeBitCast(try symbol("MPI_Comm_rank"), to: CommQuery.self)
    commSize = unsafeBitCast(try symbol("MPI_Comm_size"), to: CommQuery.self)
    sendCall = unsafeBitCast(try symbol("MPI_Send"), to: Send.self)
    recvCall = unsafeBitCast(try symbol("MPI_Recv"), to: Recv.self)
    bcastCall = unsafeBitCast(try symbol("MPI_Bcast"), to: Bcast.self)
    barrierCall = unsafeBitCast(try symbol("MPI_Barrier"), to: CommCall.self)
    finalizeCall = unsafeBitCast(try symbol("MPI_Finalize"), to: Finalize.self)
    abortCall = unsafeBitCast(try symbol("MPI_Abort"), to: Abort.self)
  }

  /// Opens `library`, or the first of `defaultNames` that loads. RTLD_GLOBAL: Open MPI's own plugins,
  /// which it dlopens in turn, resolve their symbols against it.
  static func load(_ library: String?) throws(SurgeryError) -> MPILibrary {
    var reasons: [String] = []
    for name in library.map({ [$0] }) ?? defaultNames {
      if let handle = dlopen(name, RTLD_NOW | RTLD_GLOBAL) { return try MPILibrary(path: name, handle: handle) }
      reasons.append(dlerror().map { String(cString: $0) } ?? name)
    }
    throw .cluster("running under MPI, but no MPI library loads (\(reasons.joined(separator: "; "))); install Open MPI (apt-get install openmpi-bin libopenmpi-dev) or set ESPALIER_MPI_LIBRARY")
  }

  /// MPI_Init_thread with MPI_THREAD_FUNNELED (only the main thread calls MPI; BLAS and attention have
  /// workers of their own), then the world's rank and size.
  func initialize() throws(SurgeryError) -> (rank: Int, size: Int) {
    var provided: Int32 = 0
    try check(initThread(nil, nil, 1, &provided), "MPI_Init_thread")
    var rank: Int32 = 0, size: Int32 = 0
    try check(commRank(world, &rank), "MPI_Comm_rank")
    try check(commSize(world, &size), "MPI_Comm_size")
    return (Int(rank), Int(size))
  }

  func send(_ buffer: UnsafeRawPointer, bytes: Int, to destination: Int) throws(SurgeryError) {
    var offset = 0
    repeat {
      let n = min(Self.maxMessage, bytes - offset)
      try check(sendCall(buffer + offset, Int32(n), byte, Int32(destination), tag, world), "MPI_Send to rank \(destination)")
      offset += n
    } while offset < bytes
  }

  func receive(_ buffer: UnsafeMutableRawPointer, bytes: Int, from source: Int) throws(SurgeryError) {
    var offset = 0
    repeat {
      let n = min(Self.maxMessage, bytes - offset)
      try check(recvCall(buffer + offset, Int32(n), byte, Int32(source), tag, world, nil), "MPI_Recv from rank \(source)")
      offset += n
    } while offset < bytes
  }

  func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws(SurgeryError) {
    var offset = 0
    repeat {
      let n = min(Self.maxMessage, bytes - offset)
      try check(bcastCall(buffer + offset, Int32(n), byte, Int32(root), world), "MPI_Bcast from rank \(root)")
      offset += n
    } while offset < bytes
  }

  func barrier() throws(SurgeryError) { try check(barrierCall(world), "MPI_Barrier") }

  func finalize() throws(SurgeryError) { try check(finalizeCall(), "MPI_Finalize") }

  func abort(code: Int32) { _ = abortCall(world, code) }

  private func check(_ code: Int32, _ call: String) throws(SurgeryError) {
    if code != 0 { throw .cluster("\(call) failed with MPI error \(code)") }
  }
}
