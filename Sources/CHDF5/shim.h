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
