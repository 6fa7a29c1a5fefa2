// Where splats go: content-adaptive initialization (centres drawn from the
// image's gradient energy, as Image-GS does) and error-guided densification
// (centres drawn from the residual). Sizes follow the local density of draws,
// so busy regions get many small splats and flat ones a few large ones.
//
// Every draw comes from SeededUniform in a fixed order: a seed means the same
// splats on every machine and thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "../fit_options.h"

namespace gs::cpu {
namespace GS_ISA {

// Separable box blur of radius r (clamped at the borders), in place.
inline void box_blur(std::vector<double>& map, int w, int h, int r) {
  if (r <= 0) return;
  std::vector<double> tmp(map.size()), line(std::max(w, h) + 1);
  auto pass = [&](const std::vector<double>& in, std::vector<double>& out, int len, int count,
                  size_t step, size_t stride) {
    for (int c = 0; c < count; ++c) {
      const size_t base = size_t(c) * stride;
      line[0] = 0;
      for (int k = 0; k < len; ++k) line[k + 1] = line[k] + in[base + size_t(k) * step];
      for (int k = 0; k < len; ++k) {
        const int lo = std::max(0, k - r), hi = std::min(len, k + r + 1);
        out[base + size_t(k) * step] = (line[hi] - line[lo]) / (hi - lo);
      }
    }
  };
  pass(map, tmp, w, h, 1, size_t(w));  // rows
  pass(tmp, map, h, w, size_t(w), 1);  // columns
}

// Sum over channels of the absolute central differences in x and y of a planar
// 3 x H x W image: large at edges and texture.
inline std::vector<double> gradient_energy(const float* image, int w, int h) {
  const size_t plane = size_t(w) * h;
  std::vector<double> e(plane, 0.0);
  for (int ch = 0; ch < 3; ++ch) {
    const float* im = image + ch * plane;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const int xl = std::max(0, x - 1), xr = std::min(w - 1, x + 1);
        const int yu = std::max(0, y - 1), yd = std::min(h - 1, y + 1);
        const size_t row = size_t(y) * w;
        e[row + x] += std::fabs(im[row + xr] - im[row + xl]) +
                      std::fabs(im[size_t(yd) * w + x] - im[size_t(yu) * w + x]);
      }
  }
  return e;
}

struct Draw {
  float x, y, std;  // pixels
};

// n centres drawn with probability proportional to `energy` mixed with a
// uniform share `uniform_mix` (so flat regions are never empty). Each draw's
// isotropic std is std_scale * sqrt(pixels per splat) where the density of
// splats is `density_count` times the mixed distribution at that pixel,
// clamped to [kMinStd, max_std].
inline std::vector<Draw> draw_centres(const std::vector<double>& energy, int w, int h, int n,
                                      double uniform_mix, double density_count, float std_scale,
                                      float max_std, SeededUniform& uniform) {
  const size_t plane = size_t(w) * h;
  double total = 0;
  for (double v : energy) total += v;
  const double share = total > 0 ? 1.0 - uniform_mix : 0.0;
  std::vector<double> cdf(plane);
  double acc = 0;
  for (size_t p = 0; p < plane; ++p) {
    acc += share * (total > 0 ? energy[p] / total : 0.0) + (1.0 - share) / double(plane);
    cdf[p] = acc;
  }
  std::vector<Draw> out;
  out.reserve(n);
  for (int k = 0; k < n; ++k) {
    const double u = double(uniform()) * acc;
    const float jx = uniform(), jy = uniform();  // named, so the draw order is defined
    const size_t p = std::min<size_t>(plane - 1, size_t(std::upper_bound(cdf.begin(), cdf.end(), u) -
                                                        cdf.begin()));
    const double prob = cdf[p] - (p > 0 ? cdf[p - 1] : 0.0);
    const double area = 1.0 / std::max(1e-12, density_count * prob / acc);
    const float s = std::clamp(float(std_scale * std::sqrt(area)), kMinStd, max_std);
    out.push_back({float(p % w) + jx, float(p / w) + jy, s});
  }
  return out;
}

}  // namespace GS_ISA
using namespace GS_ISA;
}  // namespace gs::cpu
