// The decode render, compiled once per instruction set like fit.cpp but always
// without a*b+c contraction (-ffp-contract=off): a decoded image must not depend
// on which CPU (or the GPU, see cuda/render_forward.cu) rendered it.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../fit_options.h"  // shared by every build: must stay generic too
#include "isa_target.h"        // after the standard headers, before the kernels

#include "fit.h"
#include "render.h"

namespace gs::cpu::GS_ISA {

void render_normalized(const float* rows, size_t n, int width, int height, float* planar,
                       bool parallel) {
  std::vector<PixelSplat<float>> splats(n);
  for (size_t i = 0; i < n; ++i)
    splats[i] = to_pixel_splat(rows + i * kParamsPerSplat, float(width), float(height));
  render_image(splats, width, height, planar, parallel);
}

}  // namespace gs::cpu::GS_ISA
