// The CUDA backend's C++ API, as the bindings see it: plain C++ types only (no
// CUDA headers), so bindings_cuda.cpp compiles with the host compiler. Every
// function throws std::runtime_error with CUDA's message when a CUDA call fails
// and std::invalid_argument for bad input; none of them exits the process.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "fit_options.h"
#include "image_view.h"

namespace gs::gpu {

struct DeviceStatus {
  bool available = false;  // a device is present and can run this build's kernels
  int count = 0;           // CUDA devices visible
  std::string name;        // the current device's name, when available
  int compute_capability = 0;  // e.g. 90
  std::string reason;      // why not available
};
// Never throws; the answer is cached after the first call.
DeviceStatus device_status();

// Same contract as cpu::fit_batch; results agree with it to float tolerance
// (atomic accumulation makes the CUDA fit reproducible to rounding, not bitwise).
std::vector<FitResult> fit_batch(const std::vector<ImageView>& images, const FitOptions& opts);

struct RenderJob {
  const float* params;  // n x 8, normalized (splat_math.h)
  int n;
  int width, height;
};
// Renders every job into `out`: the jobs' H x W x 3 images back to back, as
// uint8 (as_u8) or float. Deterministic, and the same pixels as the CPU decode
// (same terms, same order, neither contracts a*b+c).
void render_batch(const std::vector<RenderJob>& jobs, bool as_u8, void* out);

// ---- test hooks: pixel-unit parameters (as the CPU's *_px_f64 hooks), float ----

// force_direct: skip the tile lists and render every tile in direct mode.
std::vector<float> render_px(const float* params, int n, int width, int height, bool force_direct);
// Backward for a given image gradient (H x W x 3): n x 8 pixel-unit gradients.
std::vector<float> render_backward_px(const float* params, int n, int width, int height,
                                      const float* grad_image, bool force_direct);
// The fit's fused kernel: gradient of the clamped L2 loss against target (H x W x 3 uint8).
std::vector<float> fit_grad_px(const float* params, int n, int width, int height,
                               const uint8_t* target, bool force_direct);
// Tile lists after sorting: offsets (n_tiles + 1) and slot ids.
std::pair<std::vector<long long>, std::vector<int>> bin_tiles_px(const float* params, int n, int width,
                                                                 int height);
// Pruning of B images x N slots, n_active[b] live: compacts params, m, v (B x N x 8)
// and age (B x N) in place.
void prune(float* params, float* m, float* v, int* age, int n_images, int n_slots_per_image,
           std::vector<int>& n_active, float threshold);

}  // namespace gs::gpu
