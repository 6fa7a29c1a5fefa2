// CPU fitting loop: structured (or random) initialization, forward, L2 loss with
// an optional L1 colour penalty, analytic backward, Adam with per-group learning
// rates and a cosine schedule, luminance-aware pruning. No Python per iteration.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../fit_options.h"

namespace gs::cpu {

struct ImageView {
  const uint8_t* pixels;  // H x W x 3, row-major, interleaved RGB
  int width, height;
};

// Fits every image; results are independent of batch composition and thread count.
std::vector<FitResult> fit_batch(const std::vector<ImageView>& images, const FitOptions& opts);

// The loss used by the fit: mean squared error of the clamped render against the
// target, over pixels and channels. Its image gradient passes straight through the
// clamp (2 * (clamp(out) - target) / count), which still pulls overshooting pixels
// back into range. render/target/grad are planar 3 x H x W. Returns the MSE.
template <typename T>
T l2_loss_and_grad(const T* render, const T* target, size_t count, T* grad, bool parallel);

}  // namespace gs::cpu
