// Options of the fitting loop, shared by the CPU and CUDA backends. Defaults and
// documented limits live in the Python layer (src/gscodec/engine.py), which
// validates every field before it reaches C++.
#pragma once

#include <cstdint>
#include <vector>

namespace gs {

enum class InitMode : int { kGrid = 0, kRandom = 1 };

struct FitOptions {
  int n_splats = 400;
  int iterations = 2000;
  InitMode init = InitMode::kGrid;
  uint64_t seed = 0;
  // Adam step sizes per parameter group. Positions and the shear term are in
  // units of the grid cell (sqrt(W*H/N) pixels), the two Cholesky diagonal terms
  // are optimized as logarithms, colours are in [0,1] units.
  float lr_position = 0.05f;
  float lr_covariance = 0.05f;
  float lr_color = 0.01f;
  float lr_final_ratio = 0.1f;  // cosine decay from lr to lr * ratio
  float l1_color = 0.0f;        // weight of mean |colour| added to the loss
  // Luminance-aware pruning: every prune_every steps in the middle half of the
  // run, splats whose luminance(|colour|) < prune_threshold are removed.
  float prune_threshold = 0.0f;
  int prune_every = 100;
  int threads = 0;  // 0: all the cores OpenMP sees
};

struct FitResult {
  std::vector<float> params;  // N x 8, normalized (see splat_math.h)
  int width = 0, height = 0;
  double psnr = 0;            // of the 8-bit render against the 8-bit target, dB
  int iterations = 0;
  int n_initial = 0;          // splats before pruning
};

}  // namespace gs
