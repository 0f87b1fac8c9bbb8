// Serial HDF5 (Debian libhdf5-dev, pkg-config "hdf5-serial", 1.10 on bookworm).
// The H5T_NATIVE_* / H5P_DEFAULT / H5F_ACC_* names are macros that expand to (H5open(), global):
// Swift cannot import them, so they are exposed as static inline getters.
#include <hdf5.h>

static inline hid_t espalier_H5P_DEFAULT(void) { return H5P_DEFAULT; }
static inline unsigned espalier_H5F_ACC_RDONLY(void) { return H5F_ACC_RDONLY; }
static inline unsigned espalier_H5F_ACC_TRUNC(void) { return H5F_ACC_TRUNC; }
static inline unsigned espalier_H5F_ACC_EXCL(void) { return H5F_ACC_EXCL; }
static inline hid_t espalier_H5T_NATIVE_FLOAT(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t espalier_H5T_NATIVE_DOUBLE(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t espalier_H5T_NATIVE_INT8(void) { return H5T_NATIVE_INT8; }
static inline hid_t espalier_H5T_NATIVE_UINT8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t espalier_H5T_NATIVE_INT16(void) { return H5T_NATIVE_INT16; }
static inline hid_t espalier_H5T_NATIVE_UINT16(void) { return H5T_NATIVE_UINT16; }
static inline hid_t espalier_H5T_NATIVE_INT32(void) { return H5T_NATIVE_INT32; }
static inline hid_t espalier_H5T_NATIVE_UINT32(void) { return H5T_NATIVE_UINT32; }
static inline hid_t espalier_H5T_NATIVE_INT64(void) { return H5T_NATIVE_INT64; }
static inline hid_t espalier_H5T_NATIVE_UINT64(void) { return H5T_NATIVE_UINT64; }
static inline hid_t espalier_H5S_ALL(void) { return H5S_ALL; }
static inline hid_t espalier_H5E_DEFAULT(void) { return H5E_DEFAULT; }
static inline hid_t espalier_H5T_C_S1(void) { return H5T_C_S1; }
static inline size_t espalier_H5T_VARIABLE(void) { return H5T_VARIABLE; }
static inline hid_t espalier_H5T_IEEE_F32LE(void) { return H5T_IEEE_F32LE; }
static inline hid_t espalier_H5T_IEEE_F64LE(void) { return H5T_IEEE_F64LE; }
static inline hid_t espalier_H5T_STD_I8LE(void) { return H5T_STD_I8LE; }
static inline hid_t espalier_H5T_STD_U8LE(void) { return H5T_STD_U8LE; }
static inline hid_t espalier_H5T_STD_I16LE(void) { return H5T_STD_I16LE; }
static inline hid_t espalier_H5T_STD_U16LE(void) { return H5T_STD_U16LE; }
static inline hid_t espalier_H5T_STD_I32LE(void) { return H5T_STD_I32LE; }
static inline hid_t espalier_H5T_STD_U32LE(void) { return H5T_STD_U32LE; }
static inline hid_t espalier_H5T_STD_I64LE(void) { return H5T_STD_I64LE; }
static inline hid_t espalier_H5T_STD_U64LE(void) { return H5T_STD_U64LE; }
static inline hid_t espalier_H5P_DATASET_CREATE(void) { return H5P_DATASET_CREATE; }
static inline hid_t espalier_H5P_LINK_CREATE(void) { return H5P_LINK_CREATE; }

// A crash inside libhdf5 on a corrupt file (some bit-flipped files crash h5dump too) ends the process
// with exit 2 and a message naming the file, instead of a signal. Armed only around libhdf5 calls
// (HDF5Library.guarded); a fault anywhere else goes to the handler that was installed before (Swift's
// backtracer), by restoring it and returning so that the faulting instruction runs again.
#include <signal.h>
#include <string.h>
#include <unistd.h>

// The guard's state lives in function-local statics: Swift emits the inline functions it calls, not
// file-scope variables of an imported header.
static inline char *espalier_crash_message(void) {
  static char message[1024];
  return message;
}
static inline volatile sig_atomic_t *espalier_crash_armed(void) {
  static volatile sig_atomic_t armed = 0;
  return &armed;
}
static inline char *espalier_watch_message(void) {
  static char message[1024];
  return message;
}
static inline struct sigaction *espalier_crash_previous(void) {
  static struct sigaction previous[32];
  return previous;
}

static void espalier_crash_handler(int sig) {
  if (*espalier_crash_armed() > 0) {
    const char *message = espalier_crash_message();
    ssize_t ignored = write(2, message, strlen(message));
    (void)ignored;
    _exit(2);
  }
  sigaction(sig, &espalier_crash_previous()[sig], NULL);
}

static void espalier_watch_handler(int sig) {
  (void)sig;
  const char *message = espalier_watch_message();
  ssize_t ignored = write(2, message, strlen(message));
  (void)ignored;
  _exit(2);
}

/// A watchdog for a libhdf5 call that must be quick (reading a small attribute): a corrupt file can
/// send libhdf5 into a loop; after `seconds` the process ends with exit 2 and `message`.
static inline void espalier_watch_begin(const char *message, unsigned seconds) {
  char *target = espalier_watch_message();
  strncpy(target, message, 1023);
  target[1023] = 0;
  struct sigaction action = {0};
  action.sa_handler = espalier_watch_handler;
  sigemptyset(&action.sa_mask);
  sigaction(SIGALRM, &action, NULL);
  // A parent may have spawned us with SIGALRM blocked (the mask is inherited): unblock it here.
  sigset_t alarm_only;
  sigemptyset(&alarm_only);
  sigaddset(&alarm_only, SIGALRM);
  sigprocmask(SIG_UNBLOCK, &alarm_only, NULL);
  alarm(seconds);
}

static inline void espalier_watch_end(void) { alarm(0); }

static inline void espalier_crash_guard_install(void) {
  static int installed = 0;
  if (installed) return;
  installed = 1;
  static char stack[1 << 16];
  stack_t alternate = {0};
  alternate.ss_sp = stack;
  alternate.ss_size = sizeof stack;
  sigaltstack(&alternate, NULL);
  // SIGABRT too: glibc aborts on the invalid free of a corrupt file's metadata. Not SIGILL or SIGTRAP:
  // those are Swift's own traps (a failed check in our code is a bug to see, never a corrupt file).
  int signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGABRT};
  for (int i = 0; i < 4; i++) {
    struct sigaction action = {0};
    action.sa_handler = espalier_crash_handler;
    action.sa_flags = SA_ONSTACK | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(signals[i], &action, &espalier_crash_previous()[signals[i]]);
  }
}

/// Arms the guard with the message to print (copied; truncated to fit).
static inline void espalier_crash_guard_arm(const char *message) {
  char *target = espalier_crash_message();
  strncpy(target, message, 1023);
  target[1023] = 0;
  *espalier_crash_armed() += 1;
}

/// Guards nest (a scan reads attributes inside its own guard): each disarm undoes one arm.
static inline void espalier_crash_guard_disarm(void) {
  if (*espalier_crash_armed() > 0) *espalier_crash_armed() -= 1;
}
