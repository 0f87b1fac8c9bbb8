// OpenBLAS's CBLAS interface (Debian libopenblas-dev, pkg-config "openblas").
#include <cblas.h>

/* The SSE control/status register (MXCSR) of the calling thread, for flushing denormals around hot loops
   (bits 0x8040: FTZ and DAZ). A no-op elsewhere. */
#if defined(__x86_64__)
#include <xmmintrin.h>
static inline unsigned int espalier_fp_mode_get(void) { return _mm_getcsr(); }
static inline void espalier_fp_mode_set(unsigned int mode) { _mm_setcsr(mode); }
static inline unsigned int espalier_fp_mode_flush_denormals(void) { return 0x8040; }
#else
static inline unsigned int espalier_fp_mode_get(void) { return 0; }
static inline void espalier_fp_mode_set(unsigned int mode) { (void)mode; }
static inline unsigned int espalier_fp_mode_flush_denormals(void) { return 0; }
#endif
