// The fit's loss on the CPU (its CUDA twin is fused into cuda/render_backward.cu).
#pragma once

#include <cstddef>

#include "../splat_math.h"  // GS_ISA

namespace gs::cpu {
namespace GS_ISA {

// clamp(v, 0, 1) - target: the residual of what a decoder shows.
template <typename T>
inline T clamped_residual(T v, T target) {
  return (v > T(0) ? (v < T(1) ? v : T(1)) : T(0)) - target;
}

// One element of the gradient: scale = 2 / count (fused into the fit's forward).
template <typename T>
inline T l2_grad(T v, T target, T scale) {
  return scale * clamped_residual(v, target);
}

// The loss used by the fit: mean squared error of the clamped render against the
// target, over pixels and channels. Its image gradient passes straight through the
// clamp (2 * (clamp(out) - target) / count), which still pulls overshooting pixels
// back into range. render/target/grad are planar 3 x H x W. Returns the MSE.
template <typename T>
T l2_loss_and_grad(const T* render, const T* target, size_t count, T* grad, bool parallel) {
  double sum = 0;
  const T scale = T(2) / T(count);
#pragma omp parallel for reduction(+ : sum) schedule(static) if (parallel)
  for (long long k = 0; k < static_cast<long long>(count); ++k) {
    const T r = clamped_residual(render[k], target[k]);
    sum += double(r) * double(r);
    grad[k] = scale * r;
  }
  return T(sum / double(count));
}

}  // namespace GS_ISA
using namespace GS_ISA;
}  // namespace gs::cpu
