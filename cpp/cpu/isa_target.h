// Included by fit.cpp and decode.cpp after every standard header (and
// fit_options.h, whose inline functions both builds share) and before the
// kernel headers: in the AVX2 build (GS_TARGET_AVX2) the code that follows is
// compiled for AVX2 + FMA, while the standard library's code stays generic. The
// linker keeps one copy of each standard template for all builds, so that copy
// must run on every CPU.
#if defined(GS_TARGET_AVX2)
#pragma GCC target("avx2,fma")
#endif
