// The structured initialization's grid (paper §4.3), shared by the CPU fit
// (cpu/fit.cpp, Fitter::init_grid) and the CUDA one (cuda/fit.cu on the host,
// cuda/init.cu on the device), so that both place the same splats.
#pragma once

#include <algorithm>
#include <cmath>

#include "fit_options.h"
#include "splat_math.h"  // GS_HD, GS_ISA

namespace gs {
namespace GS_ISA {

// nx * ny cells of sx x sy pixels, as square as N allows; N - nx * ny extra
// splats go to the busiest cells. std0: the isotropic 1-sigma radius, the
// largest circle in a cell.
struct GridShape {
  int nx, ny;
  float sx, sy;
  float std0;
};

inline GridShape grid_shape(int n_splats, int width, int height) {
  GridShape g;
  g.nx = std::min(std::max(1, int(std::lround(std::sqrt(double(n_splats) * width / height)))), n_splats);
  g.ny = std::max(1, n_splats / g.nx);
  g.sx = float(width) / g.nx;
  g.sy = float(height) / g.ny;
  g.std0 = std::max(kMinStd, 0.5f * std::min(g.sx, g.sy));
  return g;
}

// The grid cell column (row) of pixel x (y), for cells of size s, n of them.
GS_HD int cell_index(int x, float s, int n) {
  const int c = int(float(x) / s);
  return c < n - 1 ? c : n - 1;
}

}  // namespace GS_ISA
using namespace GS_ISA;
}  // namespace gs
