// <immintrin.h> for the files of AVX-512 kernels (internal): include it before any other header. GCC 12's AVX-512
// intrinsics pass an _mm512_undefined_*() operand that -Wuninitialized reports at every inlined use; the diagnostic
// state set here holds for the rest of the including file, the intrinsics header's lines included.
#pragma once
#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif
