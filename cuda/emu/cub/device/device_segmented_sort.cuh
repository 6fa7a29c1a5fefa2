// Emulator stand-in for cub::DeviceSegmentedSort (see cuda/emu/cuda_runtime.h).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <numeric>
#include <vector>

namespace cub {
struct DeviceSegmentedSort {
  template <typename K, typename B, typename E>
  static cudaError_t SortKeys(void* temp, size_t& bytes, const K* in, K* out, long long, long long segments,
                              B begin, E end, cudaStream_t = nullptr) {
    if (!temp) {
      bytes = 1;
      return cudaSuccess;
    }
    for (long long s = 0; s < segments; ++s) {
      std::copy(in + begin[s], in + end[s], out + begin[s]);
      std::sort(out + begin[s], out + end[s]);
    }
    return cudaSuccess;
  }
  template <typename K, typename V, typename B, typename E>
  static cudaError_t StableSortPairsDescending(void* temp, size_t& bytes, const K* keys_in, K* keys_out,
                                               const V* values_in, V* values_out, long long, long long segments,
                                               B begin, E end, cudaStream_t = nullptr) {
    if (!temp) {
      bytes = 1;
      return cudaSuccess;
    }
    for (long long s = 0; s < segments; ++s) {
      std::vector<long long> idx(end[s] - begin[s]);
      std::iota(idx.begin(), idx.end(), static_cast<long long>(begin[s]));
      std::stable_sort(idx.begin(), idx.end(), [&](long long a, long long b) { return keys_in[a] > keys_in[b]; });
      for (size_t k = 0; k < idx.size(); ++k) {
        keys_out[begin[s] + k] = keys_in[idx[k]];
        values_out[begin[s] + k] = values_in[idx[k]];
      }
    }
    return cudaSuccess;
  }
};
}  // namespace cub
