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
