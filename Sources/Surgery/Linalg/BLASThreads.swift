// OpenBLAS's thread count is one setting for the whole process, and its products depend on it: the same
// sgemm gives other low bits with one thread than with two (0.3.21 here: thousands of the 32×448 outputs
// of a K = 64 product differ). Attention runs its per-head products on a pool of workers with BLAS
// single-threaded; if that switch were a bare toggle, a product running meanwhile on another thread (a
// second pass in the same process: a test suite, a library user) would silently take the other
// thread count, and a run would stop being reproducible bit for bit. (It did: a resumed fine-tune
// differed from the uninterrupted one in CI while other suites ran attention beside it.)
//
// So every BLAS or LAPACK call holds this lock shared, and a single-threaded region holds it
// exclusively: a call never overlaps a change of the setting. Within a tool, where one thread drives
// the engine, nothing ever waits. The workers of a region call BLAS under the region's exclusive hold;
// they are marked so that their calls do not ask for the lock again.

import CBLAS
import Foundation

public enum BLASThreads {
  nonisolated(unsafe) private static let lock: UnsafeMutablePointer<pthread_rwlock_t> = {
    let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
    var attributes = pthread_rwlockattr_t()
    pthread_rwlockattr_init(&attributes)
    // A waiting writer goes before new readers, so a region is not starved by a stream of products.
    pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
    pthread_rwlock_init(lock, &attributes)
    pthread_rwlockattr_destroy(&attributes)
    return lock
  }()

  /// Set (non-nil) on a thread while it works inside a single-threaded region.
  nonisolated(unsafe) private static let insideRegion: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key, nil)
    return key
  }()

  private static var marker: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: 1)! }

  /// Runs one BLAS or LAPACK call at the process's current thread count.
  @inline(__always)
  public static func call<R>(_ body: () -> R) -> R {
    if pthread_getspecific(insideRegion) != nil { return body() }
    pthread_rwlock_rdlock(lock)
    defer { pthread_rwlock_unlock(lock) }
    return body()
  }

  /// Runs `body` with OpenBLAS single-threaded; no other thread's BLAS call runs meanwhile except those of
  /// `body`'s workers, which must run inside `worker`.
  public static func singleThreaded(_ body: () -> Void) {
    pthread_rwlock_wrlock(lock)
    defer { pthread_rwlock_unlock(lock) }
    let threads = openblas_get_num_threads()
    openblas_set_num_threads(1)
    defer { openblas_set_num_threads(threads) }
    worker(body)
  }

  /// Marks this thread as one of a single-threaded region's workers while `body` runs.
  @inline(__always)
  public static func worker<R>(_ body: () -> R) -> R {
    let previous = pthread_getspecific(insideRegion)
    pthread_setspecific(insideRegion, marker)
    defer { pthread_setspecific(insideRegion, previous) }
    return body()
  }

  /// Sets the thread count for later calls (waits for calls in flight), and the size of the engine's
  /// own worker pools (attention) with it.
  public static func set(_ n: Int) {
    pthread_rwlock_wrlock(lock)
    defer { pthread_rwlock_unlock(lock) }
    openblas_set_num_threads(Int32(n))
    poolSize = max(1, n)
  }

  /// Workers of the engine's own parallel regions: the cores, unless `set` named fewer (the ranks of an
  /// MPI job that share a machine share its cores).
  nonisolated(unsafe) public private(set) static var poolSize = ProcessInfo.processInfo.activeProcessorCount
}
