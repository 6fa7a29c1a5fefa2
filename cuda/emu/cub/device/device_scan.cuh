// Emulator stand-in for cub::DeviceScan (see cuda/emu/cuda_runtime.h).
#pragma once
#include <cuda_runtime.h>

namespace cub {
struct DeviceScan {
  template <typename In, typename Out, typename N>
  static cudaError_t ExclusiveSum(void* temp, size_t& bytes, In in, Out out, N n, cudaStream_t = nullptr) {
    if (!temp) {
      bytes = 1;
      return cudaSuccess;
    }
    using T = typename std::remove_reference<decltype(*out)>::type;
    T sum = 0;
    for (N i = 0; i < n; ++i) {
      const T v = in[i];
      out[i] = sum;
      sum += v;
    }
    return cudaSuccess;
  }
};
}  // namespace cub
