// Tile binning for a whole batch at once: every splat goes to each 16x16 tile
// its cutoff box touches, keyed by the global tile index (image | tile), by a
// counting sort: count pairs per tile (atomics), exclusive scan, scatter.
// There is no per-tile cap: a tile's list is as long as it needs to be, and a
// list that does not fit the buffer falls back to direct mode (device.cuh).
// No depth sort is needed: the render is an order-free sum.
#include <cub/device/device_scan.cuh>
#include <cub/device/device_segmented_sort.cuh>

#include "kernels.cuh"

namespace gs::gpu {

namespace {

constexpr int kThreads = 256;

template <Units U>
__global__ void __launch_bounds__(kThreads)
preprocess_kernel(const float* __restrict__ params, BatchView batch, DevSplat* __restrict__ splats,
                  unsigned long long* __restrict__ tile_count, float* __restrict__ grad) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= batch.n_slots) return;
  if (grad) {  // the fused fit step accumulates into it next
    float4* g = reinterpret_cast<float4*>(grad + size_t(s) * kParamsPerSplat);
    g[0] = make_float4(0.f, 0.f, 0.f, 0.f);
    g[1] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  const int b = batch.slot_image[s];
  const ImageDesc d = batch.images[b];
  DevSplat out = {};
  out.x0 = 1;  // empty box unless live and visible
  out.x1 = 0;
  out.y0 = 1;
  out.y1 = 0;
  if (s - d.splat_off < batch.n_active[b]) {
    const PixelSplat<float> ps = read_splat<U>(params + size_t(s) * kParamsPerSplat, d);
    int x0, x1, y0, y1;
    cutoff_pixel_box(ps, d.width, d.height, &x0, &x1, &y0, &y1);
    out.mx = ps.mx;
    out.my = ps.my;
    out.inv_a = ps.inv_a;
    out.b = ps.b;
    out.inv_c = ps.inv_c;
    out.r = ps.r;
    out.g = ps.g;
    out.bl = ps.bl;
    if (x0 <= x1 && y0 <= y1) {
      out.x0 = x0;
      out.x1 = x1;
      out.y0 = y0;
      out.y1 = y1;
      for (int ty = y0 / kTileSize; ty <= y1 / kTileSize; ++ty)
        for (int tx = x0 / kTileSize; tx <= x1 / kTileSize; ++tx)
          atomicAdd(&tile_count[d.tile_off + ty * d.tiles_x + tx], 1ull);
    }
  }
  float4* o = reinterpret_cast<float4*>(splats + s);
  o[0] = make_float4(out.mx, out.my, out.inv_a, out.b);
  o[1] = make_float4(out.inv_c, out.r, out.g, out.bl);
  reinterpret_cast<int4*>(o)[2] = make_int4(out.x0, out.x1, out.y0, out.y1);
}

// Scatters slot ids into the lists, taking each position by decrementing the
// tile's count, which leaves every count at zero for the next round. Order
// within a list depends on atomic timing; sort_tiles() fixes it where needed.
__global__ void __launch_bounds__(kThreads)
fill_kernel(BatchView batch, const DevSplat* __restrict__ splats,
            unsigned long long* __restrict__ tile_count,
            const unsigned long long* __restrict__ tile_start, unsigned long long capacity,
            int* __restrict__ ids) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= batch.n_slots) return;
  const int4 box = __ldg(reinterpret_cast<const int4*>(splats + s) + 2);
  if (box.x > box.y || box.z > box.w) return;
  const ImageDesc& d = batch.images[batch.slot_image[s]];
  for (int ty = box.z / kTileSize; ty <= box.w / kTileSize; ++ty)
    for (int tx = box.x / kTileSize; tx <= box.y / kTileSize; ++tx) {
      const int t = d.tile_off + ty * d.tiles_x + tx;
      const unsigned long long pos = atomicAdd(&tile_count[t], ~0ull) - 1ull;  // count - 1
      if (tile_start[t + 1] <= capacity) ids[tile_start[t] + pos] = s;
    }
}

}  // namespace

void TileBins::init(int tiles, cudaStream_t s) {
  n_tiles = tiles;
  count.allocate(size_t(tiles) + 1, s);
  count.zero(s);
  start.allocate(size_t(tiles) + 1, s);
  size_t bytes = 0;
  GS_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes, count.get(), start.get(), tiles + 1, s));
  scan_temp.allocate(bytes, s);
}

void TileBins::reserve(unsigned long long pairs, cudaStream_t s) {
  ids.allocate(pairs, s);
  capacity = pairs;
}

void launch_preprocess(Units units, const float* params, const BatchView& batch, DevSplat* splats,
                       TileBins& bins, float* grad, cudaStream_t s) {
  if (batch.n_slots == 0) return;
  const unsigned int grid = blocks_for(batch.n_slots, kThreads);
  switch (units) {
    case Units::kNormalized:
      preprocess_kernel<Units::kNormalized><<<grid, kThreads, 0, s>>>(params, batch, splats, bins.count.get(), grad);
      break;
    case Units::kPixel:
      preprocess_kernel<Units::kPixel><<<grid, kThreads, 0, s>>>(params, batch, splats, bins.count.get(), grad);
      break;
    case Units::kFit:
      preprocess_kernel<Units::kFit><<<grid, kThreads, 0, s>>>(params, batch, splats, bins.count.get(), grad);
      break;
  }
  GS_CUDA_LAUNCHED();
}

void scan_tiles(TileBins& bins, cudaStream_t s) {
  size_t bytes = bins.scan_temp.size();
  GS_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(bins.scan_temp.get(), bytes, bins.count.get(),
                                              bins.start.get(), bins.n_tiles + 1, s));
}

void launch_fill(const BatchView& batch, const DevSplat* splats, TileBins& bins, cudaStream_t s) {
  if (batch.n_slots == 0) return;
  fill_kernel<<<blocks_for(batch.n_slots, kThreads), kThreads, 0, s>>>(
      batch, splats, bins.count.get(), bins.start.get(), bins.capacity, bins.ids.get());
  GS_CUDA_LAUNCHED();
}

void sort_tiles(TileBins& bins, unsigned long long pairs, cudaStream_t s) {
  bins.ids_sorted.allocate(pairs, s);
  if (pairs == 0) return;
  const unsigned long long* begin = bins.start.get();
  size_t bytes = 0;
  GS_CUDA_CHECK(cub::DeviceSegmentedSort::SortKeys(nullptr, bytes, bins.ids.get(), bins.ids_sorted.get(),
                                                   static_cast<long long>(pairs), bins.n_tiles,
                                                   begin, begin + 1, s));
  if (bins.sort_temp.size() < bytes) bins.sort_temp.allocate(bytes, s);
  GS_CUDA_CHECK(cub::DeviceSegmentedSort::SortKeys(bins.sort_temp.get(), bytes, bins.ids.get(),
                                                   bins.ids_sorted.get(), static_cast<long long>(pairs),
                                                   bins.n_tiles, begin, begin + 1, s));
}

TileLists bin_exact_sorted(Units units, const float* params, const BatchView& batch, DevSplat* splats,
                           TileBins& bins, unsigned long long pair_budget, cudaStream_t s,
                           unsigned long long* total) {
  launch_preprocess(units, params, batch, splats, bins, nullptr, s);
  scan_tiles(bins, s);
  unsigned long long pairs = 0;
  bins.start.download(&pairs, 1, s, bins.n_tiles);  // pageable: returns when copied
  GS_CUDA_CHECK(cudaStreamSynchronize(s));
  if (total) *total = pairs;
  const bool fits = pairs <= pair_budget;
  bins.reserve(fits ? pairs : 0, s);
  launch_fill(batch, splats, bins, s);  // with capacity 0 it only resets the counts
  if (!fits) return bins.lists();
  sort_tiles(bins, pairs, s);
  return bins.sorted_lists();
}

}  // namespace gs::gpu
