// Exceptions and OpenMP: an exception that leaves a parallel region terminates
// the process (std::bad_alloc would abort instead of raising MemoryError), so
// loop bodies that can throw run through ParallelErrors::capture, which keeps
// the first exception; rethrow() raises it after the region.
#pragma once

#include <exception>

namespace gs {

class ParallelErrors {
 public:
  template <typename Body>
  void capture(Body&& body) noexcept {
    try {
      body();
    } catch (...) {
#pragma omp critical(gs_parallel_errors)
      if (!first_) first_ = std::current_exception();
    }
  }

  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::exception_ptr first_;
};

}  // namespace gs
