// Per-splat math shared by the CPU and CUDA backends.
//
// Everything here is a small inline function of one splat and one pixel, compiled
// for the host by the C++ compiler and for host + device by nvcc. Keeping it in
// one place is what lets the two backends agree to float tolerance.
//
// Pixel-space splat: mean (mx, my) in pixels, covariance Sigma = L L^T with the
// lower-triangular Cholesky factor L = [[a, 0], [b, c]] (a, c > 0, pixels) and an
// RGB colour (unbounded; the render is an order-free additive sum).
//
// For a pixel centre p and d = p - mean, the Mahalanobis power is
//   y1 = dx / a,  y2 = (dy - b * y1) / c,  q = y1^2 + y2^2 = d^T Sigma^-1 d,
// and the splat's weight is exp(-q / 2) when q <= kPowerCutoff, else 0.
// docs/format.md states the same equation for independent decoders.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define GS_HD __host__ __device__ __forceinline__
#else
#define GS_HD inline
#endif

// The CPU kernels are compiled once per instruction set (see CMakeLists.txt);
// GS_ISA names a namespace around all inline code of one build, so that the
// builds' copies of a function (same source, different instructions) never
// merge at link time. Everything is reachable as gs::name all the same.
#ifndef GS_ISA
#define GS_ISA generic
#endif

namespace gs {
namespace GS_ISA {

// Weights below 1/255 are dropped: q <= 2 ln 255 (about 3.33 sigma).
constexpr float kPowerCutoff = 11.082527f;  // 2 * ln(255), rounded to float
constexpr int kParamsPerSplat = 8;          // x, y, a, b, c, r, g, b
constexpr int kTileSize = 16;               // pixels per tile side (CPU and CUDA)

// Layout of one splat row in every (N, 8) parameter array.
enum Param : int { kX = 0, kY, kA, kB, kC, kR, kG, kBlue };

template <typename T>
struct PixelSplat {
  T mx, my;        // mean, pixels
  T a, b, c;       // Cholesky factor, pixels
  T inv_a, inv_c;  // cached reciprocals
  T r, g, bl;      // colour
};

// Normalized splat (positions in [0,1] of the image, Cholesky factor divided by
// the image size: L_norm = diag(1/W, 1/H) L_px) -> pixel splat for a W x H output.
template <typename T>
GS_HD PixelSplat<T> to_pixel_splat(const T* p, T width, T height) {
  PixelSplat<T> s;
  s.mx = p[kX] * width;
  s.my = p[kY] * height;
  s.a = p[kA] * width;
  s.b = p[kB] * height;
  s.c = p[kC] * height;
  s.inv_a = T(1) / s.a;
  s.inv_c = T(1) / s.c;
  s.r = p[kR];
  s.g = p[kG];
  s.bl = p[kBlue];
  return s;
}

// Pixel-space parameter row (as used inside the fitting loop) -> pixel splat:
// a normalized row of a 1 x 1 image (multiplying by 1 is exact).
template <typename T>
GS_HD PixelSplat<T> from_pixel_params(const T* p) {
  return to_pixel_splat(p, T(1), T(1));
}

// Pixel splat -> normalized row (the inverse of to_pixel_splat for a W x H
// image): how both backends' fits return their splats. The fit clamps centres
// to the image in its own units; clamping again keeps float rounding from
// putting them a hair outside [0, 1] (NaN passes through, as std::clamp).
GS_HD void to_normalized_row(const PixelSplat<float>& s, float width, float height, float* row) {
  const float x = s.mx / width, y = s.my / height;
  row[kX] = x < 0.f ? 0.f : (1.f < x ? 1.f : x);
  row[kY] = y < 0.f ? 0.f : (1.f < y ? 1.f : y);
  row[kA] = s.a / width;
  row[kB] = s.b / height;
  row[kC] = s.c / height;
  row[kR] = s.r;
  row[kG] = s.g;
  row[kBlue] = s.bl;
}

// Half extents of the axis-aligned box that holds the cutoff ellipse exactly:
// sqrt(cutoff * Sigma_xx) and sqrt(cutoff * Sigma_yy).
template <typename T>
GS_HD void cutoff_extent(const PixelSplat<T>& s, T* ext_x, T* ext_y) {
  const T k = std::sqrt(T(kPowerCutoff));
  *ext_x = k * std::fabs(s.a);
  *ext_y = k * std::sqrt(s.b * s.b + s.c * s.c);
}

// Inclusive pixel index range [lo, hi] whose centres (i + 0.5) lie within
// centre +- extent, clipped to [0, size). Empty when lo > hi.
template <typename T>
GS_HD void pixel_range(T centre, T extent, int size, int* lo, int* hi) {
  T first = std::ceil(centre - extent - T(0.5));
  T last = std::floor(centre + extent - T(0.5));
  if (!(first <= last) || last < T(0) || first > T(size - 1)) {  // also catches NaN
    *lo = 1;
    *hi = 0;
    return;
  }
  *lo = first < T(0) ? 0 : int(first);
  *hi = last > T(size - 1) ? size - 1 : int(last);
}

// Inclusive pixel box [x0, x1] x [y0, y1] of the splat's cutoff ellipse in a
// width x height image (empty when x0 > x1 or y0 > y1): the exact set of pixels
// at which every backend evaluates the splat.
template <typename T>
GS_HD void cutoff_pixel_box(const PixelSplat<T>& s, int width, int height, int* x0, int* x1,
                            int* y0, int* y1) {
  T ex, ey;
  cutoff_extent(s, &ex, &ey);
  pixel_range(s.mx, ex, width, x0, x1);
  pixel_range(s.my, ey, height, y0, y1);
}

// Pixel columns [x0, x1] of row `dy` (pixel centre minus mean, y) whose
// centres may lie in the cutoff ellipse, within the box columns [box_x0,
// box_x1]. Solving q(dx, dy) = kPowerCutoff for dx gives the chord
//   dx = a b dy / S +- |a c| sqrt(S K - dy^2) / S,   S = b^2 + c^2,
// widened by one pixel on each side so that float rounding never drops a pixel
// that weight() keeps; the caller still applies the exact cutoff. Rows of thin
// rotated splats cover a small part of their box: this is what the backward
// pass skips. A degenerate splat (S = 0, NaN) gets the whole box row.
// RowSpans holds the per-splat constants, computed once per splat.
template <typename T>
struct RowSpans {
  T slope, half_scale, reach2;  // a b / S, |a c| / S, S K
};

template <typename T>
GS_HD RowSpans<T> row_spans(const PixelSplat<T>& s) {
  const T S = s.b * s.b + s.c * s.c;
  return {s.a * s.b / S, std::fabs(s.a * s.c) / S, S * T(kPowerCutoff)};
}

template <typename T>
GS_HD void cutoff_row_span(const PixelSplat<T>& s, const RowSpans<T>& r, T dy, int box_x0, int box_x1,
                           int* x0, int* x1) {
  const T disc = r.reach2 - dy * dy;
  const T centre = s.mx + r.slope * dy - T(0.5);
  const T half = r.half_scale * std::sqrt(disc > T(0) ? disc : T(0));
  // Compared so that NaN gives the box edge, which also keeps the int
  // conversion in range.
  const T first = std::ceil(centre - half) - T(1), last = std::floor(centre + half) + T(1);
  const T lo = first >= T(box_x0) ? first : T(box_x0);
  const T hi = last <= T(box_x1) ? last : T(box_x1);
  *x0 = lo > T(box_x1) ? box_x1 + 1 : int(lo);
  *x1 = hi < T(box_x0) ? box_x0 - 1 : int(hi);
}

// Mahalanobis power q of the offset (dx, dy) from the splat's mean; also returns
// the whitened coordinates y1, y2 that the backward pass reuses.
template <typename T>
GS_HD T power(const PixelSplat<T>& s, T dx, T dy, T* y1, T* y2) {
  *y1 = dx * s.inv_a;
  *y2 = (dy - s.b * *y1) * s.inv_c;
  return *y1 * *y1 + *y2 * *y2;
}

// Weight exp(-q/2) inside the cutoff (q <= kPowerCutoff), exactly 0 outside or
// for NaN. The float version is branch-free and call-free so that the per-pixel
// loops vectorize on the CPU and compile to the same arithmetic on the GPU:
// with t = -q/2 * log2(e), 2^t = 2^n * 2^f for n = round(t), |f| <= 1/2, and 2^f
// from its degree-6 Taylor series (relative error < 2e-7, about 1 ulp). The
// cutoff is applied as a bit mask because a select on the result stops GCC from
// vectorizing; lanes outside the cutoff may compute garbage that the mask drops.
GS_HD float weight_from_power(float q) {
  const float t = q * -0.721347520f;              // -log2(e) / 2
  const float shifted = t + 12582912.f;           // 1.5 * 2^23: rounds t to an integer
  const float n = shifted - 12582912.f;
  const float f = (t - n) * 0.693147181f;         // (t - n) * ln 2
  float p = 1.f / 720.f;
  p = p * f + 1.f / 120.f;
  p = p * f + 1.f / 24.f;
  p = p * f + 1.f / 6.f;
  p = p * f + 0.5f;
  p = p * f + 1.f;
  p = p * f + 1.f;
  const uint32_t keep = 0u - static_cast<uint32_t>(q <= kPowerCutoff);
#if defined(__CUDA_ARCH__)
  const uint32_t n_bits = __float_as_uint(shifted) - 0x4B400000u;  // n, two's complement
  return __uint_as_float((__float_as_uint(p) + (n_bits << 23)) & keep);
#else
  uint32_t p_bits, n_bits;
  std::memcpy(&p_bits, &p, sizeof p_bits);
  std::memcpy(&n_bits, &shifted, sizeof n_bits);
  p_bits = (p_bits + ((n_bits - 0x4B400000u) << 23)) & keep;
  float out;
  std::memcpy(&out, &p_bits, sizeof out);
  return out;
#endif
}

GS_HD double weight_from_power(double q) {
  return q <= double(kPowerCutoff) ? std::exp(-0.5 * q) : 0.0;
}

// The splat's weight at offset (dx, dy) from its mean: the forward pass.
template <typename T>
GS_HD T weight(const PixelSplat<T>& s, T dx, T dy) {
  const T y1 = dx * s.inv_a;
  const T y2 = (dy - s.b * y1) * s.inv_c;
  return weight_from_power(y1 * y1 + y2 * y2);
}

// The backward pass sums a splat's pixels in moment form. At one pixel with
// weight w, whitened offset (y1, y2) and colour gradient g = (gr, gg, gb):
//   dL/dq = dL/dw * dw/dq = -k / 2,  k = w (g . colour),
//   dL/dy2 = 2 dL/dq y2,  dL/dy1 = 2 dL/dq y1 - dL/dy2 b / c  (y2 depends on y1),
//   d = p - mean:  dL/dx = -dL/dy1 / a,  dL/dy = -dL/dy2 / c,
//   dL/da = -dL/dy1 y1 / a,  dL/db = -dL/dy2 y1 / c,  dL/dc = -dL/dy2 y2 / c,
//   dL/d(colour) = w g.
// Every term is linear in k (y1, y2, y1^2, y1 y2, y2^2) with per-splat factors,
// so a gather sums those five moments and the colour terms (about 14
// operations per pixel instead of 28) and converts once (grad_from_moments):
//   s1 = sum k y1, s2 = sum k y2, s11 = sum k y1^2, s12 = sum k y1 y2,
//   s22 = sum k y2^2, r/g/bl = sum w g_channel.
template <typename T>
struct GradMoments {
  T s1, s2, s11, s12, s22, r, g, bl;
};

// Adds one pixel (whitened offset y1, y2, weight w, colour gradient g) to m.
template <typename T>
GS_HD void add_pixel_moments(const PixelSplat<T>& s, T y1, T y2, T w, T gr, T gg, T gb,
                             GradMoments<T>& m) {
  const T k = w * (gr * s.r + gg * s.g + gb * s.bl);
  const T k1 = k * y1, k2 = k * y2;
  m.s1 += k1;
  m.s2 += k2;
  m.s11 += k1 * y1;
  m.s12 += k1 * y2;
  m.s22 += k2 * y2;
  m.r += w * gr;
  m.g += w * gg;
  m.bl += w * gb;
}

// The splat's gradient from its summed moments (sum dL/dy2 = -s2, sum dL/dy1 =
// -s1 + b s2 / c, and the same with one more factor y1 or y2), written to
// grad[kParamsPerSplat] in the layout of Param (pixel parameters).
template <typename T>
GS_HD void grad_from_moments(const PixelSplat<T>& s, const GradMoments<T>& m, T* grad) {
  const T shear = s.b * s.inv_c;
  grad[kX] = s.inv_a * (m.s1 - shear * m.s2);
  grad[kY] = s.inv_c * m.s2;
  grad[kA] = s.inv_a * (m.s11 - shear * m.s12);
  grad[kB] = s.inv_c * m.s12;
  grad[kC] = s.inv_c * m.s22;
  grad[kR] = m.r;
  grad[kG] = m.g;
  grad[kBlue] = m.bl;
}

// Rec. 601 luma of the colour's magnitude: the pruning rule's measure of how much
// a splat contributes (colours may be negative in an additive model).
template <typename T>
GS_HD T luminance(T r, T g, T b) {
  return T(0.299) * std::fabs(r) + T(0.587) * std::fabs(g) + T(0.114) * std::fabs(b);
}

// Float [0,1] -> 8-bit value, as every decoder must do it: clamp, scale, round
// half up.
GS_HD uint8_t to_u8(float v) {
  v = v > 0.f ? (v < 1.f ? v : 1.f) : 0.f;  // NaN -> 0
  return static_cast<uint8_t>(v * 255.f + 0.5f);
}

}  // namespace GS_ISA
using namespace GS_ISA;
}  // namespace gs
