// zlib (Debian zlib1g-dev, a dependency of libhdf5-dev): Espalier inflates HDF5 gzip chunks itself to
// check that each fills its chunk exactly before libhdf5 reads the dataset (HDF5/HDF5Chunks.swift).
#include <zlib.h>
