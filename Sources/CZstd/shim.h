// zstd (Debian libzstd-dev). Static-linking-only APIs are not used.
#include <zstd.h>
#include <zstd_errors.h>
