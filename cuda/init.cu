// Structured initialization on the device (paper §4.3; CPU twin:
// Fitter::init_grid / init_random in cpu/fit.cpp): grid centres, the isotropic
// covariance of the cell's inscribed circle, extra splats in the cells whose
// colour varies most, and colours = cell mean / cell coverage.
//
// Per-cell statistics are summed by one thread per cell in the CPU's raster
// order, and this file is compiled with --fmad=false, so the sums and the
// variance ranking agree bit for bit with the CPU's generic build (its AVX2
// build contracts a*b+c, and differs in the last bits: only exact ties in the
// ranking could tell). Positions agree exactly; sizes and colours to float
// rounding (expf, and the coverage render).
#include <cub/device/device_segmented_sort.cuh>

#include "grid_shape.h"  // cell_index
#include "kernels.cuh"

namespace gs::gpu {

namespace {

constexpr int kThreads = 128;

// The pixels [lo, hi] whose cell index is i (empty: lo > hi). The map is
// monotone: start from the real-valued guess, then walk to the exact ends.
__device__ void cell_span(int i, float s, int n, int size, int* lo, int* hi) {
  int a = max(0, min(size - 1, int(float(i) * s) - 1));
  while (a > 0 && cell_index(a - 1, s, n) >= i) --a;
  while (a < size && cell_index(a, s, n) < i) ++a;
  int z = max(0, min(size - 1, int(float(i + 1) * s) + 1));
  while (z >= 0 && cell_index(z, s, n) > i) --z;
  while (z + 1 < size && cell_index(z + 1, s, n) <= i) ++z;
  *lo = a;
  *hi = z;
}

struct CellRef {
  GridDesc g;
  ImageDesc d;
  int local;  // cell index within its image
  int x0, x1, y0, y1;
};

__device__ CellRef cell_ref(const GridDesc* grids, const int* cell_image, const BatchView& batch, int c) {
  CellRef r;
  const int b = cell_image[c];
  r.g = grids[b];
  r.d = batch.images[b];
  r.local = c - r.g.cell_off;
  cell_span(r.local % r.g.nx, r.g.sx, r.g.nx, r.d.width, &r.x0, &r.x1);
  cell_span(r.local / r.g.nx, r.g.sy, r.g.ny, r.d.height, &r.y0, &r.y1);
  return r;
}

__global__ void __launch_bounds__(kThreads)
grid_stats_kernel(const GridDesc* __restrict__ grids, const int* __restrict__ cell_image, int n_cells,
                  BatchView batch, const uchar4* __restrict__ target, double* __restrict__ sums,
                  double* __restrict__ var, int* __restrict__ order_in) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= n_cells) return;
  const CellRef r = cell_ref(grids, cell_image, batch, c);
  double s0 = 0, s1 = 0, s2 = 0, sq = 0;
  int count = 0;
  for (int y = r.y0; y <= r.y1; ++y)
    for (int x = r.x0; x <= r.x1; ++x) {
      const uchar4 t = target[r.d.pix_off + static_cast<long long>(y) * r.d.width + x];
      const double v0 = float(t.x) / 255.f, v1 = float(t.y) / 255.f, v2 = float(t.z) / 255.f;
      ++count;
      s0 += v0;
      sq += v0 * v0;
      s1 += v1;
      sq += v1 * v1;
      s2 += v2;
      sq += v2 * v2;
    }
  sums[3 * size_t(c)] = s0;
  sums[3 * size_t(c) + 1] = s1;
  sums[3 * size_t(c) + 2] = s2;
  const double k = count > 1 ? count : 1;
  double m2 = 0;
  m2 += (s0 / k) * (s0 / k);
  m2 += (s1 / k) * (s1 / k);
  m2 += (s2 / k) * (s2 / k);
  var[c] = sq / k - m2;
  order_in[c] = r.local;
}

__global__ void __launch_bounds__(kThreads)
grid_positions_kernel(const GridDesc* __restrict__ grids, const int* __restrict__ order,
                      BatchView batch, float* __restrict__ params, int* __restrict__ cell_of) {
  ThreadSlot t;
  if (!thread_slot(batch, &t)) return;
  const int s = t.slot, i = t.index;
  const GridDesc g = grids[t.image];
  const ImageDesc& d = t.d;
  const int n_grid = g.nx * g.ny;
  float x, y, log_std;
  int cell;
  if (i < n_grid) {
    x = (float(i % g.nx) + 0.5f) * g.sx;
    y = (float(i / g.nx) + 0.5f) * g.sy;
    log_std = g.log_std0;
    cell = i;
  } else {  // cpu: order[e % (nx * ny)], cells by variance, descending
    cell = order[g.cell_off + (i - n_grid) % n_grid];
    x = (float(cell % g.nx) + 0.75f) * g.sx;
    y = (float(cell / g.nx) + 0.75f) * g.sy;
    log_std = g.log_std_extra;
  }
  float* p = params + size_t(s) * kParamsPerSplat;
  p[kX] = x / d.cell;
  p[kY] = y / d.cell;
  p[kA] = log_std;
  p[kB] = 0.f;
  p[kC] = log_std;
  p[kR] = p[kG] = p[kBlue] = 1.f;
  cell_of[s] = cell;
}

__global__ void __launch_bounds__(kThreads)
cell_cover_kernel(const GridDesc* __restrict__ grids, const int* __restrict__ cell_image, int n_cells,
                  BatchView batch, const float* __restrict__ coverage, double* __restrict__ cover) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= n_cells) return;
  const CellRef r = cell_ref(grids, cell_image, batch, c);
  double sum = 0;
  for (int y = r.y0; y <= r.y1; ++y)
    for (int x = r.x0; x <= r.x1; ++x)
      sum += coverage[r.d.pix_off + static_cast<long long>(y) * r.d.width + x];
  cover[c] = sum;
}

__global__ void __launch_bounds__(kThreads)
grid_colors_kernel(const GridDesc* __restrict__ grids, const int* __restrict__ cell_of,
                   const double* __restrict__ sums, const double* __restrict__ cover, BatchView batch,
                   float* __restrict__ params) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= batch.n_slots) return;
  const int c = grids[batch.slot_image[s]].cell_off + cell_of[s];
  const double cov = cover[c] > 1e-6 ? cover[c] : 1e-6;
  float* p = params + size_t(s) * kParamsPerSplat;
  p[kR] = float(sums[3 * size_t(c)] / cov);
  p[kG] = float(sums[3 * size_t(c) + 1] / cov);
  p[kBlue] = float(sums[3 * size_t(c) + 2] / cov);
}

__global__ void __launch_bounds__(kThreads)
random_positions_kernel(const float* __restrict__ u, BatchView batch, const float* __restrict__ log_std0,
                        float* __restrict__ params) {
  ThreadSlot t;
  if (!thread_slot(batch, &t)) return;
  const float x = u[2 * t.index] * float(t.d.width), y = u[2 * t.index + 1] * float(t.d.height);
  float* p = params + size_t(t.slot) * kParamsPerSplat;
  p[kX] = x / t.d.cell;
  p[kY] = y / t.d.cell;
  p[kA] = log_std0[t.image];
  p[kB] = 0.f;
  p[kC] = log_std0[t.image];
  p[kR] = p[kG] = p[kBlue] = 1.f;
}

// Total coverage per image: fixed-order strided sums and a fixed tree, so the
// result is deterministic (it differs from the CPU's serial sum in the last bits).
__global__ void __launch_bounds__(kThreads)
image_cover_kernel(BatchView batch, const float* __restrict__ coverage, double* __restrict__ cover) {
  __shared__ double part[kThreads];
  const int tid = threadIdx.x;
  const ImageDesc d = batch.images[blockIdx.x];
  const long long plane = static_cast<long long>(d.width) * d.height;
  double sum = 0;
  for (long long k = tid; k < plane; k += kThreads) sum += coverage[d.pix_off + k];
  part[tid] = sum;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (tid < half) part[tid] += part[tid + half];
    __syncthreads();
  }
  if (tid == 0) cover[blockIdx.x] = part[0];
}

__global__ void __launch_bounds__(kThreads)
random_colors_kernel(const float* __restrict__ u, BatchView batch, const double* __restrict__ cover,
                     float* __restrict__ params) {
  ThreadSlot t;
  if (!thread_slot(batch, &t)) return;
  const int s = t.slot, b = t.image, i = t.index;
  const ImageDesc& d = t.d;
  const double plane = double(d.width) * double(d.height);
  const float scale = float(plane / (cover[b] > 1e-6 ? cover[b] : 1e-6));
  const float* uc = u + 2 * size_t(d.splat_cap) + 3 * size_t(i);
  float* p = params + size_t(s) * kParamsPerSplat;
  p[kR] = uc[0] * scale;
  p[kG] = uc[1] * scale;
  p[kBlue] = uc[2] * scale;
}

}  // namespace

void launch_grid_stats(GridInit& g, const BatchView& batch, const uchar4* target, cudaStream_t s) {
  if (g.n_cells == 0) return;
  grid_stats_kernel<<<blocks_for(g.n_cells, kThreads), kThreads, 0, s>>>(
      g.grids.get(), g.cell_image.get(), g.n_cells, batch, target, g.sums.get(), g.var.get(),
      g.order_in.get());
  GS_CUDA_LAUNCHED();
}

void sort_grid_cells(GridInit& g, int n_images, cudaStream_t s) {
  if (g.n_cells == 0) return;
  const unsigned long long* off = g.cell_offsets.get();
  size_t bytes = 0;
  // Stable and descending, as cpu/fit.cpp's std::stable_sort(var[a] > var[b]).
  GS_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortPairsDescending(
      nullptr, bytes, g.var.get(), g.var_sorted.get(), g.order_in.get(), g.order.get(), g.n_cells,
      n_images, off, off + 1, s));
  g.sort_temp.allocate(bytes, s);
  GS_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortPairsDescending(
      g.sort_temp.get(), bytes, g.var.get(), g.var_sorted.get(), g.order_in.get(), g.order.get(),
      g.n_cells, n_images, off, off + 1, s));
}

void launch_grid_positions(GridInit& g, const BatchView& batch, float* params, cudaStream_t s) {
  if (batch.n_slots == 0) return;
  grid_positions_kernel<<<blocks_for(batch.n_slots, kThreads), kThreads, 0, s>>>(
      g.grids.get(), g.order.get(), batch, params, g.cell_of.get());
  GS_CUDA_LAUNCHED();
}

void launch_grid_colors(GridInit& g, const BatchView& batch, const float* coverage, float* params,
                        cudaStream_t s) {
  if (g.n_cells == 0 || batch.n_slots == 0) return;
  cell_cover_kernel<<<blocks_for(g.n_cells, kThreads), kThreads, 0, s>>>(
      g.grids.get(), g.cell_image.get(), g.n_cells, batch, coverage, g.cover.get());
  GS_CUDA_LAUNCHED();
  grid_colors_kernel<<<blocks_for(batch.n_slots, kThreads), kThreads, 0, s>>>(
      g.grids.get(), g.cell_of.get(), g.sums.get(), g.cover.get(), batch, params);
  GS_CUDA_LAUNCHED();
}

void launch_random_positions(const float* u, const BatchView& batch, const float* log_std0,
                             float* params, cudaStream_t s) {
  if (batch.n_slots == 0) return;
  random_positions_kernel<<<blocks_for(batch.n_slots, kThreads), kThreads, 0, s>>>(u, batch, log_std0, params);
  GS_CUDA_LAUNCHED();
}

void launch_random_colors(const float* u, const BatchView& batch, const float* coverage, float* params,
                          cudaStream_t s) {
  if (batch.n_slots == 0) return;
  DeviceBuffer<double> cover(batch.n_images, s);
  image_cover_kernel<<<static_cast<unsigned int>(batch.n_images), kThreads, 0, s>>>(batch, coverage, cover.get());
  GS_CUDA_LAUNCHED();
  random_colors_kernel<<<blocks_for(batch.n_slots, kThreads), kThreads, 0, s>>>(u, batch, cover.get(), params);
  GS_CUDA_LAUNCHED();
}

}  // namespace gs::gpu
