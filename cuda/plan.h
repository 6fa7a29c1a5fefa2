// Host-only planning shared by the CUDA drivers (and exposed to the CPU tests):
// how a batch is split into chunks that fit in device memory, and how many
// splat-tile pairs the sorted tile lists may hold.
#pragma once

#include <algorithm>
#include <climits>
#include <cstddef>
#include <utility>
#include <vector>

namespace gs::gpu {

// Consecutive chunks [begin, end) of items, each holding at least one item,
// whose summed bytes stay within budget (an item bigger than the budget gets a
// chunk of its own) and whose summed counts stay within max_count. Results do
// not depend on the chunking: images are independent.
inline std::vector<std::pair<size_t, size_t>> plan_chunks(const std::vector<double>& bytes,
                                                          const std::vector<long long>& counts,
                                                          double budget, long long max_count) {
  std::vector<std::pair<size_t, size_t>> chunks;
  size_t begin = 0;
  double sum = 0;
  long long count = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i > begin && (sum + bytes[i] > budget || count + counts[i] > max_count)) {
      chunks.emplace_back(begin, i);
      begin = i;
      sum = 0;
      count = 0;
    }
    sum += bytes[i];
    count += counts[i];
  }
  if (begin < bytes.size()) chunks.emplace_back(begin, bytes.size());
  return chunks;
}

// Most splat-tile pairs the sorted tile lists may hold with free_bytes of device
// memory: ids + sorted ids (8 bytes a pair) within a quarter of it, and at most
// INT_MAX pairs, the item count every CUB version's segmented sort takes. Tiles
// past the budget render in direct mode (device.cuh), so a larger count is slower,
// never unsafe.
inline unsigned long long sorted_pair_budget(size_t free_bytes) {
  return std::min<unsigned long long>(free_bytes / 32, INT_MAX);
}

}  // namespace gs::gpu
