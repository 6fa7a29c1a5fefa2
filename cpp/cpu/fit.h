// CPU backend entry points: fitting (structured or random initialization,
// forward, L2 loss with an optional L1 colour penalty, analytic backward, Adam
// with per-group learning rates and a cosine schedule, luminance-aware pruning;
// no Python per iteration) and the decode render.
//
// fit.cpp and decode.cpp are compiled once per instruction set (namespaces
// generic and, on x86-64, avx2); dispatch.cpp picks one at run time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../fit_options.h"
#include "../image_view.h"

namespace gs::cpu {

// Below this many pixels an image is fitted or rendered by one thread: a thread
// team's barriers cost more than they save (far more on an oversubscribed CPU).
constexpr long long kMinPixelsForThreadTeam = 128 * 128;
inline bool worth_a_thread_team(int width, int height) {
  return static_cast<long long>(width) * height >= kMinPixelsForThreadTeam;
}

// Fits every image; results are independent of batch composition and thread count.
std::vector<FitResult> fit_batch(const std::vector<ImageView>& images, const FitOptions& opts);

// Renders n normalized splat rows (N x 8) into planar 3 x H x W floats.
void render_normalized(const float* rows, size_t n, int width, int height, float* planar,
                       bool parallel);

// The instruction set in use: "avx2" or "generic". GSCODEC_CPU_ISA=generic in
// the environment forces the generic build (for comparing the two).
const char* active_isa();

#define GS_DECLARE_CPU_ISA(isa)                                                            \
  namespace isa {                                                                          \
  std::vector<FitResult> fit_batch(const std::vector<ImageView>& images,                   \
                                   const FitOptions& opts);                                \
  void render_normalized(const float* rows, size_t n, int width, int height, float* planar, \
                         bool parallel);                                                   \
  }
GS_DECLARE_CPU_ISA(generic)
GS_DECLARE_CPU_ISA(avx2)
#undef GS_DECLARE_CPU_ISA

}  // namespace gs::cpu
