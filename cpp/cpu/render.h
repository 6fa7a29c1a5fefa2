// CPU renderer: tile binning, forward (pixels from splats) and backward
// (splat gradients from pixel gradients).
//
// Forward is pixel-centric: each 16x16 tile sums the splats binned to it, in
// splat-index order, so results do not depend on the thread count. Backward is
// splat-centric: each splat gathers over the pixels of its cutoff box, so no two
// threads write the same gradient and no atomics are needed. Images are planar
// (3 x H x W) inside the core so that the inner loops vectorize.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../splat_math.h"
#include "loss.h"

namespace gs::cpu {
namespace GS_ISA {

// Pixel box of one splat's cutoff ellipse, clipped to the image (empty: x0 > x1).
struct PixelBox {
  int x0, x1, y0, y1;
  bool empty() const { return x0 > x1 || y0 > y1; }
};

template <typename T>
PixelBox cutoff_box(const PixelSplat<T>& s, int width, int height) {
  PixelBox box;
  cutoff_pixel_box(s, width, height, &box.x0, &box.x1, &box.y0, &box.y1);
  return box;
}

// Number of 16x16 tiles a box touches (0 when empty), in 64 bits: a sum of these
// over 2^20 splats exceeds 2^31 (docs/format.md, "Decoder limits").
inline uint64_t tiles_covered(const PixelBox& b) {
  if (b.empty()) return 0;
  return uint64_t(b.x1 / kTileSize - b.x0 / kTileSize + 1) *
         uint64_t(b.y1 / kTileSize - b.y0 / kTileSize + 1);
}

// Splat ids per tile in compressed-row form: tile t holds ids[offsets[t] .. offsets[t+1]).
// Offsets are 64-bit: the pair count is only bounded by splats x tiles.
struct TileBins {
  int tiles_x = 0, tiles_y = 0;
  std::vector<size_t> offsets;
  std::vector<int> ids;  // splat indices (callers keep the splat count within int)
};

inline void bin_boxes(const std::vector<PixelBox>& boxes, int width, int height, TileBins& bins) {
  bins.tiles_x = (width + kTileSize - 1) / kTileSize;
  bins.tiles_y = (height + kTileSize - 1) / kTileSize;
  const size_t n_tiles = size_t(bins.tiles_x) * bins.tiles_y;
  const size_t row = bins.tiles_x;
  bins.offsets.assign(n_tiles + 1, 0);
  for (const PixelBox& b : boxes) {
    if (b.empty()) continue;
    for (size_t ty = b.y0 / kTileSize; ty <= size_t(b.y1 / kTileSize); ++ty)
      for (size_t tx = b.x0 / kTileSize; tx <= size_t(b.x1 / kTileSize); ++tx)
        ++bins.offsets[ty * row + tx + 1];
  }
  for (size_t t = 0; t < n_tiles; ++t) bins.offsets[t + 1] += bins.offsets[t];
  bins.ids.resize(bins.offsets[n_tiles]);
  std::vector<size_t> cursor(bins.offsets.begin(), bins.offsets.end() - 1);
  for (size_t i = 0; i < boxes.size(); ++i) {
    const PixelBox& b = boxes[i];
    if (b.empty()) continue;
    for (size_t ty = b.y0 / kTileSize; ty <= size_t(b.y1 / kTileSize); ++ty)
      for (size_t tx = b.x0 / kTileSize; tx <= size_t(b.x1 / kTileSize); ++tx)
        bins.ids[cursor[ty * row + tx]++] = static_cast<int>(i);
  }
}

// out: planar 3 x H x W, overwritten. With loss_target (planar 3 x H x W) the
// fit's loss gradient l2_grad of each pixel goes to loss_grad in the same pass,
// while the tile is still in cache.
template <typename T>
void render_forward(const std::vector<PixelSplat<T>>& splats, const std::vector<PixelBox>& boxes,
                    const TileBins& bins, int width, int height, T* out, bool parallel,
                    const T* loss_target = nullptr, T* loss_grad = nullptr) {
  const int n_tiles = bins.tiles_x * bins.tiles_y;
  const size_t plane = size_t(width) * height;
  const T grad_scale = T(2) / T(3 * plane);
#pragma omp parallel for schedule(dynamic, 4) if (parallel)
  for (int t = 0; t < n_tiles; ++t) {
    const int tx0 = (t % bins.tiles_x) * kTileSize, ty0 = (t / bins.tiles_x) * kTileSize;
    const int tw = std::min(kTileSize, width - tx0), th = std::min(kTileSize, height - ty0);
    T acc[3][kTileSize * kTileSize] = {};
    for (size_t k = bins.offsets[t]; k < bins.offsets[t + 1]; ++k) {
      const int i = bins.ids[k];
      const PixelSplat<T>& s = splats[i];
      const PixelBox& b = boxes[i];
      const int x0 = std::max(b.x0, tx0) - tx0, x1 = std::min(b.x1, tx0 + tw - 1) - tx0;
      const int y0 = std::max(b.y0, ty0) - ty0, y1 = std::min(b.y1, ty0 + th - 1) - ty0;
      for (int ly = y0; ly <= y1; ++ly) {
        const T dy = T(ty0 + ly) + T(0.5) - s.my;
        T* __restrict ar = acc[0] + ly * kTileSize;
        T* __restrict ag = acc[1] + ly * kTileSize;
        T* __restrict ab = acc[2] + ly * kTileSize;
#pragma omp simd
        for (int lx = x0; lx <= x1; ++lx) {
          const T w = weight(s, T(tx0 + lx) + T(0.5) - s.mx, dy);
          ar[lx] += w * s.r;
          ag[lx] += w * s.g;
          ab[lx] += w * s.bl;
        }
      }
    }
    for (int ch = 0; ch < 3; ++ch)
      for (int ly = 0; ly < th; ++ly) {
        const size_t row = ch * plane + size_t(ty0 + ly) * width + tx0;
        std::copy(acc[ch] + ly * kTileSize, acc[ch] + ly * kTileSize + tw, out + row);
        if (loss_target)
          for (int lx = 0; lx < tw; ++lx)
            loss_grad[row + lx] = l2_grad(acc[ch][ly * kTileSize + lx], loss_target[row + lx], grad_scale);
      }
  }
}

// grad_image: planar 3 x H x W gradient of the loss w.r.t. the rendered image.
// Calls done(i, g) with each splat's 8 pixel-parameter gradients (Param layout,
// a scratch array done may change) on the thread that computed them, so per-splat work (the fit's Adam step)
// runs in the same parallel pass.
template <typename T, typename Done>
void render_backward_each(const std::vector<PixelSplat<T>>& splats,
                          const std::vector<PixelBox>& boxes, int width, int height,
                          const T* grad_image, bool parallel, Done&& done) {
  const int n = static_cast<int>(splats.size());
  const size_t plane = size_t(width) * height;
#pragma omp parallel for schedule(dynamic, 16) if (parallel)
  for (int i = 0; i < n; ++i) {
    const PixelSplat<T>& s = splats[i];
    const PixelBox& b = boxes[i];
    T gx = 0, gy = 0, ga = 0, gb = 0, gc = 0, gr = 0, gg = 0, gbl = 0;
    for (int py = b.y0; py <= b.y1; ++py) {
      const T dy = T(py) + T(0.5) - s.my;
      const T* rr = grad_image + size_t(py) * width;
      const T* rg = rr + plane;
      const T* rb = rg + plane;
#pragma omp simd reduction(+ : gx, gy, ga, gb, gc, gr, gg, gbl)
      for (int px = b.x0; px <= b.x1; ++px) {
        T y1v, y2v;
        const T q = power(s, T(px) + T(0.5) - s.mx, dy, &y1v, &y2v);
        const T w = weight_from_power(q);
        const ParamGrad<T> d = pixel_grad(s, y1v, y2v, w, rr[px], rg[px], rb[px]);
        gx += d.x;
        gy += d.y;
        ga += d.a;
        gb += d.b;
        gc += d.c;
        gr += d.r;
        gg += d.g;
        gbl += d.bl;
      }
    }
    T o[kParamsPerSplat];
    o[kX] = gx;
    o[kY] = gy;
    o[kA] = ga;
    o[kB] = gb;
    o[kC] = gc;
    o[kR] = gr;
    o[kG] = gg;
    o[kBlue] = gbl;
    done(i, o);
  }
}

// grad: N x 8 pixel-parameter gradients (Param layout), overwritten.
template <typename T>
void render_backward(const std::vector<PixelSplat<T>>& splats, const std::vector<PixelBox>& boxes,
                     int width, int height, const T* grad_image, T* grad, bool parallel) {
  render_backward_each(splats, boxes, width, height, grad_image, parallel, [&](int i, const T* g) {
    std::copy_n(g, kParamsPerSplat, grad + size_t(i) * kParamsPerSplat);
  });
}

// Splat x tile pairs that decoding n normalized rows (N x 8) at width x height
// bins and evaluates: the decode-work measure of docs/format.md ("Decoder
// limits"), counted from the cutoff boxes without allocating anything.
inline uint64_t decode_work(const float* rows, size_t n, int width, int height) {
  uint64_t pairs = 0;
  for (size_t i = 0; i < n; ++i) {
    const PixelSplat<float> s = to_pixel_splat(rows + i * kParamsPerSplat, float(width), float(height));
    pairs += tiles_covered(cutoff_box(s, width, height));
  }
  return pairs;
}

// Bin and render in one call: the decode path.
template <typename T>
void render_image(const std::vector<PixelSplat<T>>& splats, int width, int height, T* out,
                  bool parallel) {
  std::vector<PixelBox> boxes(splats.size());
  for (size_t i = 0; i < splats.size(); ++i) boxes[i] = cutoff_box(splats[i], width, height);
  TileBins bins;
  bin_boxes(boxes, width, height, bins);
  render_forward(splats, boxes, bins, width, height, out, parallel);
}

}  // namespace GS_ISA
using namespace GS_ISA;
}  // namespace gs::cpu
