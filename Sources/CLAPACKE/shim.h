// LAPACKE (Debian liblapacke-dev); LAPACK itself resolves to OpenBLAS through the alternatives.
#include <lapacke.h>
