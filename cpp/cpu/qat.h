// The quantizer's grid (src/gscodec/quantize.py, FieldCoding) in C++, for the
// fit's quantization-aware finish: each field is quantized on 2**bits levels
// over the range of its values (log of the Cholesky diagonal), so a file written
// at that precision reproduces the snapped splats.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "../fit_options.h"

namespace gs::cpu {
namespace GS_ISA {

// quantize.py's _TRANSFORMS: the Cholesky diagonal (fields 2 and 4) on a log scale.
inline bool quantized_on_log_scale(int field) { return field == 2 || field == 4; }

// quantize.Precision.resolve: absolute bit widths for a width x height image.
inline std::array<int, 8> resolve_bits(const FitOptions& o, int width, int height) {
  std::array<int, 8> bits{};
  for (int f = 0; f < 8; ++f) {
    int b = o.qat_bits[f];
    if (o.qat_relative[f]) {
      const int side = f == 0 ? width : height;
      b += std::max(0, int(std::ceil(std::log2(double(side)))));
    }
    bits[f] = std::clamp(b, 1, 16);
  }
  return bits;
}

struct FieldGrid {
  double lo = 0, hi = 0;
  int levels = 1;
  bool log_scale = false;

  // FieldCoding.fit: the range of the (transformed) values, float32-rounded.
  FieldGrid(const std::vector<double>& values, int bits, bool log)
      : levels((1 << bits) - 1), log_scale(log) {
    if (values.empty()) return;
    double mn = INFINITY, mx = -INFINITY;
    for (double v : values) {
      const double t = log_scale ? std::log(v) : v;
      mn = std::min(mn, t);
      mx = std::max(mx, t);
    }
    lo = float(mn);
    hi = float(mx);
  }

  // FieldCoding.encode then decode.
  float snap(double v) const {
    double t = lo;
    if (hi > lo) {
      const double x = log_scale ? std::log(v) : v;
      const double k = std::clamp(std::nearbyint((x - lo) / (hi - lo) * levels), 0.0, double(levels));
      t = lo + (hi - lo) * k / levels;
    }
    return float(log_scale ? std::exp(t) : t);
  }
};

// The grids of every field of normalized rows (n x 8, quantize.py's layout).
inline std::vector<FieldGrid> field_grids(const std::vector<double>& rows,
                                          const std::array<int, 8>& bits) {
  const size_t n = rows.size() / 8;
  std::vector<FieldGrid> grids;
  std::vector<double> column(n);
  for (int f = 0; f < 8; ++f) {
    for (size_t i = 0; i < n; ++i) column[i] = rows[8 * i + f];
    grids.emplace_back(column, bits[f], quantized_on_log_scale(f));
  }
  return grids;
}

// Snaps fields [first, last) of the rows onto the grids.
inline void snap_fields(std::vector<double>& rows, const std::vector<FieldGrid>& grids, int first,
                        int last) {
  for (size_t i = 0; i < rows.size() / 8; ++i)
    for (int f = first; f < last; ++f) rows[8 * i + f] = grids[f].snap(rows[8 * i + f]);
}

}  // namespace GS_ISA
using namespace GS_ISA;
}  // namespace gs::cpu
