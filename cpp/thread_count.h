// Sets OpenMP's thread count for a scope and restores it, also when the scope throws.
#pragma once

#include <omp.h>

namespace gs {

class ThreadCount {
 public:
  explicit ThreadCount(int threads) : saved_(omp_get_max_threads()) { omp_set_num_threads(threads); }
  ~ThreadCount() { omp_set_num_threads(saved_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  const int saved_;
};

}  // namespace gs
