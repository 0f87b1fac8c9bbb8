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
//     throws or gives exactly the listed dtype and shape; small float tensors widen to f32.

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
  check(path)
  return 0
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
