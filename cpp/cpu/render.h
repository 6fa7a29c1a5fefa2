// CPU renderer: tile binning, forward (pixels from splats) and backward
// (splat gradients from pixel gradients).
//
// Forward is pixel-centric: each 16x16 tile sums the splats binned to it, in
// splat-index order, so results do not depend on the thread count. Backward is
// splat-centric: each splat gathers over its cutoff ellipse, row span by row
// span (cutoff_row_span), so no two threads write the same gradient and no
// atomics are needed. Images are planar (3 x H x W) inside the core so that the
// inner loops vectorize.
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

// Pixels per chunk of both passes' inner loops: a splat's run of pixels in a
// row is walked in whole chunks, every lane masked by the run, so that the
// short runs of small splats are not left to scalar remainder loops (the fit
// 1.33x faster with the backward's chords and moments: docs/benchmarks.md,
// "Fit speed before and after the kernels").
constexpr int kLanes = 8;
static_assert(kTileSize % kLanes == 0, "forward chunks tile a tile row");

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
        // Chunks aligned to the tile row, whose accumulator row they never leave.
        for (int c0 = x0 & -kLanes; c0 <= x1; c0 += kLanes) {
#pragma omp simd
          for (int l = 0; l < kLanes; ++l) {
            const int lx = c0 + l;
            const T w = ((lx >= x0 && lx <= x1) ? T(1) : T(0)) *
                        weight(s, T(tx0 + lx) + T(0.5) - s.mx, dy);
            ar[lx] += w * s.r;
            ag[lx] += w * s.g;
            ab[lx] += w * s.bl;
          }
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

// grad_image: planar 3 x H x W gradient of the loss w.r.t. the rendered image,
// finite (a pixel outside a splat's ellipse contributes 0 * its gradient).
// Calls done(i, g) with each splat's 8 pixel-parameter gradients (Param layout,
// a scratch array done may change) on the thread that computed them, so
// per-splat work (the fit's Adam step) runs in the same parallel pass.
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
    // Per-lane moment sums across all chunks (GradMoments, field by field),
    // reduced once per splat: a reduction per 8-pixel chunk would cost more
    // than the chunk.
    T s1[kLanes] = {}, s2[kLanes] = {}, s11[kLanes] = {}, s12[kLanes] = {}, s22[kLanes] = {},
      sr[kLanes] = {}, sg[kLanes] = {}, sb[kLanes] = {};
    const RowSpans<T> spans = row_spans(s);
    for (int py = b.y0; py <= b.y1; ++py) {
      const T dy = T(py) + T(0.5) - s.my;
      int x0, x1;
      cutoff_row_span(s, spans, dy, b.x0, b.x1, &x0, &x1);
      const T* rr = grad_image + size_t(py) * width;
      const T* rg = rr + plane;
      const T* rb = rg + plane;
      // Chunks masked by the span: a chunk reads columns c0 .. c0 + lanes - 1,
      // inside the row (at the right edge it starts further left and masks
      // the columns before x). An image narrower than a chunk has one chunk
      // of the span's own width.
      const auto chunk = [&](int c0, int lanes, int x) {
#pragma omp simd
        for (int l = 0; l < lanes; ++l) {
          const int px = c0 + l;
          T y1, y2;
          const T q = power(s, T(px) + T(0.5) - s.mx, dy, &y1, &y2);
          const T w = ((px >= x && px <= x1) ? T(1) : T(0)) * weight_from_power(q);
          GradMoments<T> m{s1[l], s2[l], s11[l], s12[l], s22[l], sr[l], sg[l], sb[l]};
          add_pixel_moments(s, y1, y2, w, rr[px], rg[px], rb[px], m);
          s1[l] = m.s1;
          s2[l] = m.s2;
          s11[l] = m.s11;
          s12[l] = m.s12;
          s22[l] = m.s22;
          sr[l] = m.r;
          sg[l] = m.g;
          sb[l] = m.bl;
        }
      };
      if (width < kLanes) {
        if (x0 <= x1) chunk(x0, x1 - x0 + 1, x0);
        continue;
      }
      for (int x = x0; x <= x1; x += kLanes) chunk(std::min(x, width - kLanes), kLanes, x);
    }
    GradMoments<T> m{};
    for (int l = 0; l < kLanes; ++l) {
      m.s1 += s1[l];
      m.s2 += s2[l];
      m.s11 += s11[l];
      m.s12 += s12[l];
      m.s22 += s22[l];
      m.r += sr[l];
      m.g += sg[l];
      m.bl += sb[l];
    }
    T o[kParamsPerSplat];
    grad_from_moments(s, m, o);
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
