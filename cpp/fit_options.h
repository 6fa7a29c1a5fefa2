// Options of the fitting loop, shared by the CPU and CUDA backends. Defaults and
// documented limits live in the Python layer (src/gscodec/engine.py), which
// validates every field before it reaches C++.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace gs {

// kGrid: the paper's §4.3; kRandom: the ablation's baseline; kContent: centres
// drawn from the image's gradient energy.
enum class InitMode : int { kGrid = 0, kRandom = 1, kContent = 2 };

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
  // Encoder v2 (cpu/fit.cpp; the CUDA fit runs these steps on the host):
  // densification holds densify_fraction of n_splats back and adds it in
  // densify_rounds rounds where the residual is largest; each round also moves
  // the weakest respawn_fraction of the splats there.
  float densify_fraction = 0.0f;
  int densify_rounds = 4;
  float respawn_fraction = 0.0f;
  // Colours by exact least squares after init, after each densification round
  // and at the end (the render is linear in the colours).
  bool color_solve = false;
  // Warm start (CPU backend only): when not empty, image i's fit starts from
  // init_params[i] (n_splats normalized rows, N x 8 flattened, as a fit returns
  // them) instead of an init; nothing is densified or respawned and the
  // colours are kept until the final colour solve.
  std::vector<std::vector<float>> init_params;
  // Straight-through quantization (CPU backend only): the last qat_iterations
  // steps render the geometry snapped to a version-2 file's grids (value =
  // step * rint(value / step)) on x*W and y*H (step qat_steps[0], pixels), log
  // l11 and log l22 (qat_steps[1]) and l21 (qat_steps[2]), while the gradients
  // update the unsnapped values; the fit returns the snapped geometry.
  int qat_iterations = 0;
  std::array<double, 3> qat_steps = {0.0, 0.0, 0.0};
  // Coarse to fine (CPU backend only): the first coarse_fraction of the iterations
  // fit the 2x2-averaged image (a quarter of the pixels); positions are in
  // cell units, so splats carry over and only their sizes double.
  float coarse_fraction = 0.0f;
  int threads = 0;  // 0: all the cores OpenMP sees
  // Polled once per iteration; when set, the fit stops and returns nothing.
  const std::atomic<bool>* cancel = nullptr;
};

struct FitResult {
  std::vector<float> params;  // N x 8, normalized (see splat_math.h)
  int width = 0, height = 0;
  double psnr = 0;            // of the 8-bit render against the 8-bit target, dB
  int iterations = 0;
  int n_initial = 0;          // splats before pruning
  bool cancelled = false;     // stopped by FitOptions::cancel; params are not a fit
};

// The loop's fixed constants and schedules, one definition for both backends.
constexpr float kMinStd = 0.3f;  // pixels: narrower splats alias between pixel centres
constexpr float kAdamBeta1 = 0.9f, kAdamBeta2 = 0.999f, kAdamEps = 1e-15f;

// Cosine decay from 1 at step 1 to lr_final_ratio at the last step.
inline float lr_scale(int it, const FitOptions& o) {
  const float t = float(it - 1) / float(std::max(1, o.iterations - 1));
  const float r = o.lr_final_ratio;
  return r + (1.f - r) * 0.5f * (1.f + std::cos(3.14159265f * t));
}

// Paper §4.4's pruning runs every prune_every steps in the middle half of the
// run, so the survivors have time to fill in what the pruned splats covered.
inline bool prune_due(int it, const FitOptions& o) {
  return o.prune_threshold > 0.f && o.prune_every > 0 && it % o.prune_every == 0 &&
         4 * it >= o.iterations && 4 * it <= 3 * o.iterations;
}

// Splats densification adds over the run, held back from the init (none when
// no round runs); the init places n_splats minus these.
inline int densify_held(const FitOptions& o) {
  return o.iterations > 0 && o.densify_rounds > 0
             ? std::min(o.n_splats - 1, int(std::lround(o.densify_fraction * o.n_splats)))
             : 0;
}

// Densification round r (1-based) of the run falls on this iteration: the rounds
// are spread evenly over the first half, leaving the second to settle.
inline int densify_iteration(int r, const FitOptions& o) {
  return std::max(1, int(int64_t(o.iterations) * r / (2 * int64_t(o.densify_rounds))));
}

// Uniform float in [0,1) from a fixed generator, so a seed means the same on
// every platform (std::uniform_real_distribution is implementation-defined).
struct SeededUniform {
  std::mt19937_64 gen;
  explicit SeededUniform(uint64_t seed) : gen(seed) {}
  float operator()() { return float(gen() >> 40) * (1.0f / 16777216.0f); }
};

}  // namespace gs
