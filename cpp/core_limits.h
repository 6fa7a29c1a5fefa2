// The hard limits of the compiled core, shared by the CPU and CUDA bindings.
// src/gscodec/limits.py defines the same values for Python (a test checks that
// they agree); the decode-work limits live only there, as run-time settings.
#pragma once

#include <stdexcept>
#include <string>

namespace gs {

constexpr long long kMaxSplats = 1LL << 20;  // per .gsi file and per fitted image
constexpr int kMaxSide = 65535;              // a .gsi stores width and height in 16 bits
constexpr long long kMaxPixels = 1LL << 28;  // per rendered or fitted image
constexpr int kMaxIterations = 1000000;      // fit iterations

// Throws std::invalid_argument (Python ValueError) for a size the core does not render.
inline void check_size(long long width, long long height) {
  if (width < 1 || height < 1 || width > kMaxSide || height > kMaxSide || width * height > kMaxPixels)
    throw std::invalid_argument("render size " + std::to_string(width) + "x" + std::to_string(height) +
                                " is out of range");
}

}  // namespace gs
