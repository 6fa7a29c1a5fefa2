// Exact colour re-solve: the render is linear in the colours, so for fixed
// geometry the colours minimizing the (unclamped) L2 error solve the normal
// equations G c = B, where G[i][j] = sum_p w_i(p) w_j(p) over the pixels both
// splats cover (sparse: only overlapping pairs) and B[i] = sum_p w_i(p) t(p).
// Solved by Jacobi-preconditioned conjugate gradients, warm-started from the
// current colours, with a small ridge towards them so near-duplicate splats
// (a singular G) keep sane colours.
//
// Deterministic whatever the thread count: rows are built independently and
// every reduction runs in one fixed order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "render.h"

namespace gs::cpu {
namespace GS_ISA {

// Sparse symmetric G in compressed rows, each row's columns in ascending order.
struct NormalEquations {
  std::vector<size_t> row_start;  // n + 1
  std::vector<int> cols;
  std::vector<double> values;
  std::vector<double> rhs;  // n x 3
};

// Per-splat weight patches over the cutoff boxes (row-major in the box).
template <typename T>
void weight_patches(const std::vector<PixelSplat<T>>& splats, const std::vector<PixelBox>& boxes,
                    std::vector<size_t>& offsets, std::vector<T>& patches, bool parallel) {
  const int n = static_cast<int>(splats.size());
  offsets.assign(n + 1, 0);
  for (int i = 0; i < n; ++i) {
    const PixelBox& b = boxes[i];
    offsets[i + 1] = offsets[i] + (b.empty() ? 0 : size_t(b.x1 - b.x0 + 1) * (b.y1 - b.y0 + 1));
  }
  patches.resize(offsets[n]);
#pragma omp parallel for schedule(dynamic, 16) if (parallel)
  for (int i = 0; i < n; ++i) {
    const PixelBox& b = boxes[i];
    if (b.empty()) continue;
    const PixelSplat<T>& s = splats[i];
    T* out = patches.data() + offsets[i];
    const int bw = b.x1 - b.x0 + 1;
    for (int py = b.y0; py <= b.y1; ++py) {
      const T dy = T(py) + T(0.5) - s.my;
      T* row = out + size_t(py - b.y0) * bw;
#pragma omp simd
      for (int px = b.x0; px <= b.x1; ++px) row[px - b.x0] = weight(s, T(px) + T(0.5) - s.mx, dy);
    }
  }
}

// target: planar 3 x H x W.
template <typename T>
NormalEquations normal_equations(const std::vector<PixelSplat<T>>& splats,
                                  const std::vector<PixelBox>& boxes, const TileBins& bins,
                                  const T* target, int width, int height, bool parallel) {
  const int n = static_cast<int>(splats.size());
  const size_t plane = size_t(width) * height;
  std::vector<size_t> off;
  std::vector<T> patch;
  weight_patches(splats, boxes, off, patch, parallel);
  std::vector<std::vector<int>> row_cols(n);
  std::vector<std::vector<double>> row_vals(n);
  NormalEquations eq;
  eq.rhs.assign(size_t(3) * n, 0.0);
#pragma omp parallel if (parallel)
  {
    std::vector<int> seen(n, -1);  // last row that listed each splat
    std::vector<int> neighbours;
#pragma omp for schedule(dynamic, 8)
    for (int i = 0; i < n; ++i) {
      const PixelBox& bi = boxes[i];
      if (bi.empty()) continue;
      const int wi = bi.x1 - bi.x0 + 1;
      const T* pi = patch.data() + off[i];
      // The three channels in one pass: three independent sums (each in the
      // order of a channel alone) instead of one latency-bound chain at a time.
      double sum[3] = {0, 0, 0};
      for (int py = bi.y0; py <= bi.y1; ++py) {
        const T* t = target + size_t(py) * width;
        const T* w = pi + size_t(py - bi.y0) * wi - bi.x0;
        for (int px = bi.x0; px <= bi.x1; ++px) {
          const double wp = w[px];
          sum[0] += wp * t[px];
          sum[1] += wp * t[plane + px];
          sum[2] += wp * t[2 * plane + px];
        }
      }
      for (int ch = 0; ch < 3; ++ch) eq.rhs[size_t(3) * i + ch] = sum[ch];
      neighbours.clear();
      for (int ty = bi.y0 / kTileSize; ty <= bi.y1 / kTileSize; ++ty)
        for (int tx = bi.x0 / kTileSize; tx <= bi.x1 / kTileSize; ++tx) {
          const int t = ty * bins.tiles_x + tx;
          for (size_t k = bins.offsets[t]; k < size_t(bins.offsets[t + 1]); ++k) {
            const int j = bins.ids[k];
            if (seen[j] == i) continue;
            seen[j] = i;
            neighbours.push_back(j);
          }
        }
      std::sort(neighbours.begin(), neighbours.end());
      for (int j : neighbours) {
        if (j < i) continue;  // G is symmetric: row j computed (i, j) already
        const PixelBox& bj = boxes[j];
        const int x0 = std::max(bi.x0, bj.x0), x1 = std::min(bi.x1, bj.x1);
        const int y0 = std::max(bi.y0, bj.y0), y1 = std::min(bi.y1, bj.y1);
        if (x0 > x1 || y0 > y1) continue;
        const int wj = bj.x1 - bj.x0 + 1;
        const T* pj = patch.data() + off[j];
        double sum = 0;
        for (int py = y0; py <= y1; ++py) {
          const T* a = pi + size_t(py - bi.y0) * wi - bi.x0;
          const T* b = pj + size_t(py - bj.y0) * wj - bj.x0;
          T row = 0;
#pragma omp simd reduction(+ : row)
          for (int px = x0; px <= x1; ++px) row += a[px] * b[px];
          sum += row;
        }
        if (sum > 0) {
          row_cols[i].push_back(j);
          row_vals[i].push_back(sum);
        }
      }
    }
  }
  // Rows hold the upper triangle (j >= i); row i of G is its mirrored lower
  // part (columns j < i, ascending as rows j are walked in order) then its own.
  std::vector<size_t> lower(n, 0);
  for (int i = 0; i < n; ++i)
    for (int j : row_cols[i])
      if (j != i) ++lower[j];
  eq.row_start.assign(n + 1, 0);
  for (int i = 0; i < n; ++i) eq.row_start[i + 1] = eq.row_start[i] + lower[i] + row_cols[i].size();
  eq.cols.resize(eq.row_start[n]);
  eq.values.resize(eq.row_start[n]);
  std::vector<size_t> cursor(eq.row_start.begin(), eq.row_start.end() - 1);
  for (int i = 0; i < n; ++i) {
    std::copy(row_cols[i].begin(), row_cols[i].end(), eq.cols.begin() + eq.row_start[i] + lower[i]);
    std::copy(row_vals[i].begin(), row_vals[i].end(), eq.values.begin() + eq.row_start[i] + lower[i]);
    for (size_t k = 0; k < row_cols[i].size(); ++k) {
      const int j = row_cols[i][k];
      if (j == i) continue;
      eq.cols[cursor[j]] = i;
      eq.values[cursor[j]++] = row_vals[i][k];
    }
  }
  return eq;
}

// Ridge weight relative to each splat's own G[i][i]: small enough not to bias a
// well-posed solve measurably, large enough to pin down duplicates.
constexpr double kColorRidge = 1e-1;
constexpr int kColorSolveMaxIterations = 200;
// Stop when |r|^2 <= tolerance * |B|^2 per channel: the fit's solves need a few
// digits (the next steps refine anyway); tests ask for more.
constexpr double kColorSolveTolerance = 1e-8;

// Solves (G + ridge * diag(G)) c = B + ridge * diag(G) c0 for the 3 channels;
// colors: n x 3, in: the current colours c0 (the warm start), out: the solution.
// Splats that cover no pixel keep their colour.
inline void solve_colors(const NormalEquations& eq, double* colors, bool parallel,
                         double tolerance = kColorSolveTolerance) {
  const int n = static_cast<int>(eq.row_start.size()) - 1;
  std::vector<double> diag(n, 0.0);
  for (int i = 0; i < n; ++i)
    for (size_t k = eq.row_start[i]; k < eq.row_start[i + 1]; ++k)
      if (eq.cols[k] == i) diag[i] = eq.values[k];
  auto matvec = [&](const std::vector<double>& x, std::vector<double>& y) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int i = 0; i < n; ++i) {
      double acc[3] = {0, 0, 0};
      if (diag[i] > 0) {
        for (size_t k = eq.row_start[i]; k < eq.row_start[i + 1]; ++k)
          for (int ch = 0; ch < 3; ++ch) acc[ch] += eq.values[k] * x[size_t(3) * eq.cols[k] + ch];
        for (int ch = 0; ch < 3; ++ch) acc[ch] += kColorRidge * diag[i] * x[size_t(3) * i + ch];
      } else {
        for (int ch = 0; ch < 3; ++ch) acc[ch] = x[size_t(3) * i + ch];
      }
      for (int ch = 0; ch < 3; ++ch) y[size_t(3) * i + ch] = acc[ch];
    }
  };
  const size_t m = size_t(3) * n;
  std::vector<double> x(colors, colors + m), b(m), r(m), z(m), p(m), q(m);
  for (int i = 0; i < n; ++i)
    for (int ch = 0; ch < 3; ++ch) {
      const size_t k = size_t(3) * i + ch;
      b[k] = diag[i] > 0 ? eq.rhs[k] + kColorRidge * diag[i] * x[k] : x[k];
    }
  auto precondition = [&](const std::vector<double>& in, std::vector<double>& out) {
    for (int i = 0; i < n; ++i) {
      const double s = diag[i] > 0 ? 1.0 / ((1.0 + kColorRidge) * diag[i]) : 1.0;
      for (int ch = 0; ch < 3; ++ch) out[size_t(3) * i + ch] = s * in[size_t(3) * i + ch];
    }
  };
  // The three channels share G but are independent systems: each keeps its own
  // CG scalars (per-channel dot products).
  auto dot3 = [&](const std::vector<double>& u, const std::vector<double>& v, double* out) {
    out[0] = out[1] = out[2] = 0;
    for (size_t k = 0; k < m; ++k) out[k % 3] += u[k] * v[k];
  };
  matvec(x, q);
  for (size_t k = 0; k < m; ++k) r[k] = b[k] - q[k];
  precondition(r, z);
  p = z;
  double rz[3], bb[3], rr[3];
  dot3(r, z, rz);
  dot3(b, b, bb);
  for (int it = 0; it < kColorSolveMaxIterations; ++it) {
    dot3(r, r, rr);
    if (rr[0] <= tolerance * bb[0] && rr[1] <= tolerance * bb[1] && rr[2] <= tolerance * bb[2])
      break;
    matvec(p, q);
    double pq[3], alpha[3];
    dot3(p, q, pq);
    for (int ch = 0; ch < 3; ++ch) alpha[ch] = pq[ch] > 0 ? rz[ch] / pq[ch] : 0.0;
    for (size_t k = 0; k < m; ++k) {
      x[k] += alpha[k % 3] * p[k];
      r[k] -= alpha[k % 3] * q[k];
    }
    precondition(r, z);
    double rz_new[3], beta[3];
    dot3(r, z, rz_new);
    for (int ch = 0; ch < 3; ++ch) {
      beta[ch] = rz[ch] > 0 ? rz_new[ch] / rz[ch] : 0.0;
      rz[ch] = rz_new[ch];
    }
    for (size_t k = 0; k < m; ++k) p[k] = z[k] + beta[k % 3] * p[k];
  }
  std::copy(x.begin(), x.end(), colors);
}

// Rounds least-squares colours to multiples of `step` (the file's colour grid)
// for the smallest L2 error: rounding each colour alone leaves every rounding
// error in the image, while integer coordinate descent moves each colour, in
// turn, to the grid point nearest its own optimum given all the others, so
// overlapping splats absorb each other's errors (40% of the colour rounding
// loss on Kodak-224 at q7, docs/benchmarks.md). Where no colour moves alone,
// one-step moves of both colours of an overlapping pair are tried (0.004 dB
// more at q7). Each move lowers the error, so it stops; every colour stays
// within its channel's range of plain rounding (the file's code widths stay).
// Sequential, hence deterministic.
constexpr int kRoundColorsMaxSweeps = 16;

inline void round_colors_to_grid(const NormalEquations& eq, double* colors, double step) {
  const int n = static_cast<int>(eq.row_start.size()) - 1;
  const size_t m = size_t(3) * n;
  std::vector<double> index(m), grad(m, 0.0), diag(n, 0.0);
  double lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
  for (size_t k = 0; k < m; ++k) {
    index[k] = std::nearbyint(colors[k] / step);
    lo[k % 3] = std::min(lo[k % 3], index[k]);
    hi[k % 3] = std::max(hi[k % 3], index[k]);
  }
  // grad = G c - B, in grid units of c: the half-gradient of |A c - t|^2.
  for (int i = 0; i < n; ++i)
    for (size_t k = eq.row_start[i]; k < eq.row_start[i + 1]; ++k) {
      const int j = eq.cols[k];
      if (j == i) diag[i] = eq.values[k];
      for (int ch = 0; ch < 3; ++ch) grad[size_t(3) * i + ch] += eq.values[k] * index[size_t(3) * j + ch] * step;
    }
  for (size_t k = 0; k < m; ++k) grad[k] -= eq.rhs[k];
  auto move = [&](int i, int ch, double to) {
    const size_t k = size_t(3) * i + ch;
    const double delta = (to - index[k]) * step;
    index[k] = to;
    for (size_t e = eq.row_start[i]; e < eq.row_start[i + 1]; ++e)
      grad[size_t(3) * eq.cols[e] + ch] += eq.values[e] * delta;
  };
  for (int sweep = 0; sweep < kRoundColorsMaxSweeps; ++sweep) {
    bool moved = false;
    for (int i = 0; i < n; ++i) {
      if (!(diag[i] > 0)) continue;
      for (int ch = 0; ch < 3; ++ch) {
        const size_t k = size_t(3) * i + ch;
        const double best = std::nearbyint(index[k] - grad[k] / (diag[i] * step));
        const double moved_to = std::clamp(best, lo[ch], hi[ch]);
        if (moved_to == index[k]) continue;
        move(i, ch, moved_to);
        moved = true;
      }
    }
    if (moved) continue;
    // No single colour moves: try one step of both colours of an overlapping
    // pair (error change 2 step (g_i s_i + g_j s_j) + step^2 (G_ii + G_jj + 2 G_ij s_i s_j)).
    for (int i = 0; i < n; ++i)
      for (size_t e = eq.row_start[i]; e < eq.row_start[i + 1]; ++e) {
        const int j = eq.cols[e];
        if (j <= i) continue;
        for (int ch = 0; ch < 3; ++ch) {
          const size_t ki = size_t(3) * i + ch, kj = size_t(3) * j + ch;
          double best_change = -1e-12 * step * step * (diag[i] + diag[j]);
          int best_si = 0, best_sj = 0;
          for (int si = -1; si <= 1; si += 2)
            for (int sj = -1; sj <= 1; sj += 2) {
              if (index[ki] + si < lo[ch] || index[ki] + si > hi[ch] ||
                  index[kj] + sj < lo[ch] || index[kj] + sj > hi[ch]) continue;
              const double change = 2 * step * (grad[ki] * si + grad[kj] * sj) +
                  step * step * (diag[i] + diag[j] + 2 * eq.values[e] * si * sj);
              if (change < best_change) best_change = change, best_si = si, best_sj = sj;
            }
          if (!best_si) continue;
          move(i, ch, index[ki] + best_si);
          move(j, ch, index[kj] + best_sj);
          moved = true;
        }
      }
    if (!moved) break;
  }
  for (size_t k = 0; k < m; ++k) colors[k] = index[k] * step;
}

}  // namespace GS_ISA
using namespace GS_ISA;
}  // namespace gs::cpu
