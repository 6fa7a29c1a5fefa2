// Emulator stand-in for cub::BlockScan (see cuda/emu/cuda_runtime.h): a
// collective of the whole block, so it synchronizes like the real one.
#pragma once
#include <cuda_runtime.h>

namespace cub {
template <typename T, int kThreads>
class BlockScan {
 public:
  struct TempStorage {
    T v[kThreads];
  };
  explicit BlockScan(TempStorage& t) : t_(t) {}
  void ExclusiveSum(T in, T& out, T& aggregate) {
    const int tid = threadIdx.x;
    t_.v[tid] = in;
    __syncthreads();
    T sum = 0, total = 0;
    for (int i = 0; i < kThreads; ++i) {
      if (i < tid) sum += t_.v[i];
      total += t_.v[i];
    }
    out = sum;
    aggregate = total;
    __syncthreads();
  }

 private:
  TempStorage& t_;
};
}  // namespace cub
