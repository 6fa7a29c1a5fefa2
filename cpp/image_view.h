// The image a backend fits: a view of the caller's pixels, shared by the CPU
// (cpu/fit.h) and CUDA (cuda/backend.h) backends. Plain C++, no CUDA headers.
#pragma once

#include <cstdint>

namespace gs {

struct ImageView {
  const uint8_t* pixels;  // H x W x 3, row-major, interleaved RGB
  int width, height;
};

}  // namespace gs
