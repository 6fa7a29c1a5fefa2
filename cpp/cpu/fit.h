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
#include <memory>
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

// One image's optimizer state, in the fit's units (x/cell, y/cell, log a, b/cell,
// log c, rgb per splat; cell = sqrt(W*H/n_splats) pixels): n x 8 parameters,
// Adam's moments, and the Adam steps each splat has taken (its bias correction).
struct SplatState {
  std::vector<float>& params;
  std::vector<float>& m;
  std::vector<float>& v;
  std::vector<int>& age;
};

// The CPU fit of a batch, phase by phase, for a driver that runs the steps
// elsewhere (cuda/fit.cu runs them on the device): the fit's own code for what
// happens between steps (initialization, densification rounds, colour solves),
// so both backends run one algorithm. Per image, as fit_batch would:
//   begin(); for it = 1..T { step and prune; if (due(it)) between(it, renders); } end();
class FitPhases {
 public:
  virtual ~FitPhases() = default;
  virtual void begin() = 0;               // init, fresh Adam state, first colour solve
  virtual bool due(int it) const = 0;     // whether between(it) has work
  // renders[i]: image i's render (H x W x 3 floats) at step it, before its update.
  virtual void between(int it, const float* const* renders) = 0;
  virtual void end() = 0;                 // the final colour solve
  virtual SplatState state(int image) = 0;
};
std::unique_ptr<FitPhases> fit_phases(const std::vector<ImageView>& images, const FitOptions& opts);

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
  std::unique_ptr<FitPhases> fit_phases(const std::vector<ImageView>& images,              \
                                        const FitOptions& opts);                           \
  void render_normalized(const float* rows, size_t n, int width, int height, float* planar, \
                         bool parallel);                                                   \
  }
GS_DECLARE_CPU_ISA(generic)
GS_DECLARE_CPU_ISA(avx2)
#undef GS_DECLARE_CPU_ISA

}  // namespace gs::cpu
