// Grid-aware rounding of the geometry, the quantized finish's first step (the
// colours are solved and rounded after it). Plain rounding puts each field of
// each splat -- x, y, log a, b, log c -- on the file's grid alone, and every
// rounding error stays in the image. Here, starting from plain rounding, each
// splat in turn takes the one-step move of one field (to the next grid point up
// or down) that lowers the L2 error of the whole render most, given every other
// splat as it stands and its colour fixed: rounding errors cancel each other's
// and the neighbours' (AdaRound's idea, as a greedy local search). A local
// model of the error in each field (slope and Gauss-Newton curvature, one pass
// over the splat) picks the steps worth measuring exactly.
// docs/benchmarks.md ("A longer finish search"): q7's finish loses 0.08 dB
// against the unquantized fit after one round of two sweeps, 0.04 after three
// rounds of eight, instead of 0.19 with plain rounding.
//
// Each accepted move lowers the error; every index stays within its field's
// range under plain rounding (the file's code widths stay). Splats in bands of
// rows that share no pixels are searched in parallel; the result does not
// depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "render.h"

namespace gs::cpu {
namespace GS_ISA {

constexpr int kGeometryFields = 5;  // x, y, a, b, c of Param
constexpr int kBands = 4;
// A step is measured when |slope| > kScreen * curvature (at 1 the model itself
// predicts a gain; below 1 is slack for its error). Kodak-224 at q7: 0.5 keeps
// 0.092 dB of loss (0.25: 0.090, 1: 0.095) at 0.45 s on kodim01 (0.56, 0.35).
constexpr double kScreen = 0.5;

// The grids of one quantized file: position step in pixels, the step of log a
// and log c (normalized units), and the shear b's step (normalized units).
struct GeometryGrid {
  double position, log_size, shear;
};

namespace detail {

// Field f's grid coordinate `index` -> the normalized value a reader gets
// (quantize.dequantize: positions index * step / size, sizes exp(index * step)).
inline float geometry_value(int f, double index, const GeometryGrid& g, int width, int height) {
  switch (f) {
    case kX: return float(index * g.position / width);
    case kY: return float(index * g.position / height);
    case kA:
    case kC: return float(std::exp(index * g.log_size));
    default: return float(index * g.shear);
  }
}

// The inverse: a normalized value's coordinate on field f's grid (not rounded).
inline double geometry_coordinate(int f, float value, const GeometryGrid& g, int width,
                                  int height) {
  switch (f) {
    case kX: return double(value) * width / g.position;
    case kY: return double(value) * height / g.position;
    case kA:
    case kC: return std::log(double(value)) / g.log_size;
    default: return double(value) / g.shear;
  }
}

inline PixelBox box_union(const PixelBox& a, const PixelBox& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return {std::min(a.x0, b.x0), std::max(a.x1, b.x1), std::min(a.y0, b.y0), std::max(a.y1, b.y1)};
}

// residual += sign * c * w over the splat's box (c: its colour).
inline void add_to_residual(const PixelSplat<float>& s, float sign, std::vector<float>& residual,
                            int width, int height) {
  const size_t plane = size_t(width) * height;
  const float c0 = sign * s.r, c1 = sign * s.g, c2 = sign * s.bl;
  const PixelBox b = cutoff_box(s, width, height);
  for (int py = b.y0; py <= b.y1; ++py) {
    const float dy = float(py) + 0.5f - s.my;
    float* r = residual.data() + size_t(py) * width;
#pragma omp simd
    for (int px = b.x0; px <= b.x1; ++px) {
      const float w = weight(s, float(px) + 0.5f - s.mx, dy);
      r[px] += w * c0;
      r[plane + px] += w * c1;
      r[2 * plane + px] += w * c2;
    }
  }
}

// The error change of replacing splat `from` by each of `count` candidates
// (same colour c), in one pass over the union of their boxes: with
// dw = w_candidate - w_from and r the residual, |r - c dw|^2 - |r|^2 summed,
// i.e. sum dw (|c|^2 dw - 2 r.c).
inline void candidate_gains(const PixelSplat<float>& from, const PixelSplat<float>* candidates,
                            int count, const PixelBox& box, const std::vector<float>& residual,
                            int width, int height, double* gains) {
  const size_t plane = size_t(width) * height;
  const float c0 = from.r, c1 = from.g, c2 = from.bl;
  const float cc = c0 * c0 + c1 * c1 + c2 * c2;
  std::fill(gains, gains + count, 0.0);
  const int bw = box.x1 - box.x0 + 1;
  std::vector<float> w_from(bw), rc(bw);  // per row: from's weights, r.c
  for (int py = box.y0; py <= box.y1; ++py) {
    const float cy = float(py) + 0.5f;
    const float* r = residual.data() + size_t(py) * width + box.x0;
#pragma omp simd
    for (int l = 0; l < bw; ++l) {
      w_from[l] = weight(from, float(box.x0 + l) + 0.5f - from.mx, cy - from.my);
      rc[l] = r[l] * c0 + r[plane + l] * c1 + r[2 * plane + l] * c2;
    }
    for (int j = 0; j < count; ++j) {
      const PixelSplat<float>& to = candidates[j];
      float row = 0;
#pragma omp simd reduction(+ : row)
      for (int l = 0; l < bw; ++l) {
        const float dw = weight(to, float(box.x0 + l) + 0.5f - to.mx, cy - to.my) - w_from[l];
        row += dw * (cc * dw - 2 * rc[l]);
      }
      gains[j] += row;
    }
  }
}

// First and second order of the error in each field's grid index, at the
// splat as it stands (Gauss-Newton): for a move of d steps in field f the
// error changes by about d * slope[f] + d^2 * curvature[f], with
//   slope = -2 sum (r.c) dw/dk,  curvature = |c|^2 sum (dw/dk)^2,
// and w = exp(-q/2), q = y1^2 + y2^2, y1 = dx / a, y2 = (dy - b y1) / c:
//   dw/dmx = w (y1 - y2 b / c) / a,  dw/dmy = w y2 / c,
//   dw/dlog a = w y1 (y1 - y2 b / c),  dw/db = w y1 y2 / c,  dw/dlog c = w y2^2,
// times each grid's step (and the shear's normalization by the height).
inline void field_slopes(const PixelSplat<float>& s, const std::vector<float>& residual, int width,
                         int height, const GeometryGrid& grid, double* slope, double* curvature) {
  const PixelBox box = cutoff_box(s, width, height);
  const size_t plane = size_t(width) * height;
  const float c0 = s.r, c1 = s.g, c2 = s.bl;
  const float shear = s.b * s.inv_c;
  const float unit[kGeometryFields] = {
      float(grid.position) * s.inv_a, float(grid.position) * s.inv_c, float(grid.log_size),
      float(grid.shear) * height * s.inv_c, float(grid.log_size)};
  double rd[kGeometryFields] = {}, dd[kGeometryFields] = {};
  for (int py = box.y0; py <= box.y1; ++py) {
    const float dy = float(py) + 0.5f - s.my;
    const float* r = residual.data() + size_t(py) * width;
    float rd0 = 0, rd1 = 0, rd2 = 0, rd3 = 0, rd4 = 0, dd0 = 0, dd1 = 0, dd2 = 0, dd3 = 0, dd4 = 0;
#pragma omp simd reduction(+ : rd0, rd1, rd2, rd3, rd4, dd0, dd1, dd2, dd3, dd4)
    for (int px = box.x0; px <= box.x1; ++px) {
      float y1, y2;
      const float w = weight_from_power(power(s, float(px) + 0.5f - s.mx, dy, &y1, &y2));
      const float rc = r[px] * c0 + r[plane + px] * c1 + r[2 * plane + px] * c2;
      const float along = y1 - y2 * shear;
      const float d0 = w * along * unit[0], d1 = w * y2 * unit[1], d2 = w * y1 * along * unit[2],
                  d3 = w * y1 * y2 * unit[3], d4 = w * y2 * y2 * unit[4];
      rd0 += rc * d0, rd1 += rc * d1, rd2 += rc * d2, rd3 += rc * d3, rd4 += rc * d4;
      dd0 += d0 * d0, dd1 += d1 * d1, dd2 += d2 * d2, dd3 += d3 * d3, dd4 += d4 * d4;
    }
    rd[0] += rd0, rd[1] += rd1, rd[2] += rd2, rd[3] += rd3, rd[4] += rd4;
    dd[0] += dd0, dd[1] += dd1, dd[2] += dd2, dd[3] += dd3, dd[4] += dd4;
  }
  const double cc = double(c0) * c0 + double(c1) * c1 + double(c2) * c2;
  for (int f = 0; f < kGeometryFields; ++f) {
    slope[f] = -2 * rd[f];
    curvature[f] = cc * dd[f];
  }
}

}  // namespace detail

// The search's state over normalized (n x 8) `rows` as they stand: each
// splat's grid coordinates (nearest), their range per field, the pixel splats
// and the residual target - render (planar 3 x H x W).
struct GeometrySearch {
  float* rows;
  std::vector<double> index;  // n x F grid coordinates
  double lo[kGeometryFields], hi[kGeometryFields];
  std::vector<PixelSplat<float>> splats;
  std::vector<float> residual;
  int width, height;
  GeometryGrid grid;

  GeometrySearch(float* rows_, size_t n, const float* target, int width_, int height_,
                 const GeometryGrid& grid_)
      : rows(rows_), index(n * kGeometryFields), splats(n),
        residual(target, target + 3 * size_t(width_) * height_), width(width_), height(height_),
        grid(grid_) {
    std::fill(lo, lo + kGeometryFields, INFINITY);
    std::fill(hi, hi + kGeometryFields, -INFINITY);
    for (size_t i = 0; i < n; ++i) {
      for (int f = 0; f < kGeometryFields; ++f) {
        double& k = index[i * kGeometryFields + f];
        k = std::nearbyint(detail::geometry_coordinate(f, rows[i * kParamsPerSplat + f], grid,
                                                       width, height));
        lo[f] = std::min(lo[f], k);
        hi[f] = std::max(hi[f], k);
      }
      splats[i] = to_pixel_splat(rows + i * kParamsPerSplat, float(width), float(height));
      detail::add_to_residual(splats[i], -1.0f, residual, width, height);
    }
  }

  // One splat's share of the search: up to F one-step moves, each the best of
  // the candidates whose boxes stay within pixel rows [row0, row1) (the rows a
  // visit may read and write: what lets bands of splats run in parallel).
  // Returns the pixel box whose render it changed (empty when it did not move).
  PixelBox visit(size_t i, int row0, int row1) {
    constexpr int K = kParamsPerSplat, F = kGeometryFields;
    PixelBox changed{0, -1, 0, -1};
    for (int move = 0; move < F; ++move) {
      PixelSplat<float> candidates[F];
      PixelBox boxes[F];
      float values[F];
      double targets[F], gains[F];
      int fields[F], count = 0;
      const PixelBox current = cutoff_box(splats[i], width, height);
      PixelBox box = current;
      double slope[F], curvature[F];
      detail::field_slopes(splats[i], residual, width, height, grid, slope, curvature);
      for (int f = 0; f < F; ++f) {
        // Only the step the local model says may pay is measured.
        if (!(std::fabs(slope[f]) > kScreen * curvature[f])) continue;
        const double other = index[i * F + f] + (slope[f] > 0 ? -1 : 1);
        if (other < lo[f] || other > hi[f]) continue;
        float row[K];
        std::copy(rows + i * K, rows + (i + 1) * K, row);
        row[f] = values[count] = detail::geometry_value(f, other, grid, width, height);
        candidates[count] = to_pixel_splat(row, float(width), float(height));
        const PixelBox b = boxes[count] = cutoff_box(candidates[count], width, height);
        if (!b.empty() && (b.y0 < row0 || b.y1 >= row1)) continue;
        box = detail::box_union(box, b);
        targets[count] = other;
        fields[count++] = f;
      }
      if (count == 0 || box.empty()) break;
      detail::candidate_gains(splats[i], candidates, count, box, residual, width, height, gains);
      const int best = int(std::min_element(gains, gains + count) - gains);
      if (!(gains[best] < 0)) break;
      changed = detail::box_union(changed, detail::box_union(current, boxes[best]));
      detail::add_to_residual(splats[i], 1.0f, residual, width, height);
      detail::add_to_residual(candidates[best], -1.0f, residual, width, height);
      splats[i] = candidates[best];
      rows[i * K + fields[best]] = values[best];
      index[i * F + fields[best]] = targets[best];
    }
    return changed;
  }
};

namespace detail {

// Which splats the next sweep visits: those whose box meets a tile where the
// render changed (a splat elsewhere sees the same residual, so it would not
// move). Tiles of kTileSize pixels; `changed`: lists of boxes, in any order.
inline void mark_active(const std::vector<std::vector<PixelBox>>& changed,
                        const std::vector<PixelSplat<float>>& splats, int width, int height,
                        std::vector<char>& active) {
  const int tiles_x = (width + kTileSize - 1) / kTileSize;
  const int tiles_y = (height + kTileSize - 1) / kTileSize;
  std::vector<char> dirty(size_t(tiles_x) * tiles_y, 0);
  for (const auto& list : changed)
    for (const PixelBox& b : list)
      for (int ty = b.y0 / kTileSize; ty <= b.y1 / kTileSize; ++ty)
        for (int tx = b.x0 / kTileSize; tx <= b.x1 / kTileSize; ++tx)
          dirty[size_t(ty) * tiles_x + tx] = 1;
  for (size_t i = 0; i < splats.size(); ++i) {
    const PixelBox b = cutoff_box(splats[i], width, height);
    active[i] = 0;
    for (int ty = b.y0 / kTileSize; !b.empty() && ty <= b.y1 / kTileSize && !active[i]; ++ty)
      for (int tx = b.x0 / kTileSize; tx <= b.x1 / kTileSize; ++tx)
        if (dirty[size_t(ty) * tiles_x + tx]) {
          active[i] = 1;
          break;
        }
  }
}

}  // namespace detail

// rows: n normalized (n x 8) splats with unquantized geometry and the colours to
// judge by; on return their geometry lies on `grid` (colours unchanged).
// target: planar 3 x H x W in [0, 1].
//
// Parallel without changing the result: the image is cut into bands of rows,
// each splat belongs to the band its box starts in when the box (and every
// move) stays within that band and the next; bands two apart share no pixels,
// so the even bands run at once, then the odd ones, each in splat order. The
// splats too tall for a band go one by one after them. The bands depend on
// the image height only, not on the thread count.
inline void round_geometry_to_grid(float* rows, size_t n, const float* target, int width,
                                   int height, const GeometryGrid& grid, int sweeps,
                                   bool parallel) {
  constexpr int K = kParamsPerSplat, F = kGeometryFields;
  for (size_t i = 0; i < n; ++i)  // plain rounding: the search's start
    for (int f = 0; f < F; ++f) {
      float& v = rows[i * K + f];
      v = detail::geometry_value(
          f, std::nearbyint(detail::geometry_coordinate(f, v, grid, width, height)), grid, width,
          height);
    }
  GeometrySearch search(rows, n, target, width, height, grid);
  // Four bands: two per phase. Thinner bands leave more splats too tall for
  // them (kodim01 at 4500 splats: 1.05 s with 4 bands, 1.24 s with 8, 1.55 s
  // with the 2 that twice the 90th percentile of box heights gives).
  const int band = std::max(kTileSize, (height + kBands - 1) / kBands);
  const int bands = (height + band - 1) / band;
  std::vector<std::vector<size_t>> members(bands);
  std::vector<size_t> tall;
  for (size_t i = 0; i < n; ++i) {
    const PixelBox b = cutoff_box(search.splats[i], width, height);
    const int k = b.empty() ? 0 : b.y0 / band;
    if (!b.empty() && b.y1 < (k + 2) * band) members[k].push_back(i);
    else tall.push_back(i);
  }
  // The first sweep visits every splat, each later one only those near a move.
  std::vector<char> active(n, 1);
  std::vector<std::vector<PixelBox>> changed(bands + 1);  // per band, then the tall splats
  for (int sweep = 0; sweep < sweeps; ++sweep) {
    for (auto& c : changed) c.clear();
    for (int parity = 0; parity < 2; ++parity) {
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
      for (int k = parity; k < bands; k += 2)
        for (size_t i : members[k])
          if (active[i]) {
            const PixelBox b = search.visit(i, k * band, (k + 2) * band);
            if (!b.empty()) changed[k].push_back(b);
          }
    }
    for (size_t i : tall)
      if (active[i]) {
        const PixelBox b = search.visit(i, 0, height);
        if (!b.empty()) changed[bands].push_back(b);
      }
    if (std::all_of(changed.begin(), changed.end(), [](const auto& c) { return c.empty(); }))
      break;
    detail::mark_active(changed, search.splats, width, height, active);
  }
}

}  // namespace GS_ISA
using namespace GS_ISA;
}  // namespace gs::cpu
