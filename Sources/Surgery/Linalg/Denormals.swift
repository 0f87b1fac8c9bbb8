// Denormal floats (below 1.2e-38) are handled in microcode on x86, up to 100× slower per operation. Real
// text makes them common: confident softmax rows (the LM head's, attention's) hold probabilities near
// e^-87, and their products with weights underflow into the denormal range. On SmolLM2 that cost a
// training step 20%. Within the engine's passes the calling thread flushes them to zero (MXCSR FTZ and
// DAZ, as torch.set_flush_denormal(True) does); the previous mode is restored afterwards, so the library
// leaves the caller's floating-point environment as it found it. Values that small change no sum or
// product the model computes at float32 precision.

import CBLAS

public enum Denormals {
  /// Runs `body` with denormals flushed to zero on this thread.
  @inline(__always)
  public static func flushed<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
    let saved = espalier_fp_mode_get()
    espalier_fp_mode_set(saved | espalier_fp_mode_flush_denormals())
    defer { espalier_fp_mode_set(saved) }
    return try body()
  }
}
