// The CUDA backend's entry points other than the fit: device discovery, the
// batched decode, the batch layout, and the test hooks (twins of the CPU's
// *_px_f64 hooks, in float).
#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "backend.h"
#include "kernels.cuh"
#include "plan.h"

namespace gs::gpu {

namespace {

__global__ void probe_kernel() {}

const char* base_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

DeviceStatus query_device() {
  DeviceStatus st;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    st.reason = std::string("no usable CUDA driver or device (") + cudaGetErrorString(err) + ")";
    return st;
  }
  st.count = count;
  if (count == 0) {
    st.reason = "no CUDA device is visible";
    return st;
  }
  int dev = 0;
  cudaDeviceProp prop;
  err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaGetDeviceProperties(&prop, dev);
  if (err != cudaSuccess) {
    cudaGetLastError();
    st.reason = std::string("cannot query the CUDA device (") + cudaGetErrorString(err) + ")";
    return st;
  }
  st.name = prop.name;
  st.compute_capability = prop.major * 10 + prop.minor;
  // A device that this build has no code for (an older architecture than the
  // ones compiled in) is present but not usable: ask for a kernel's attributes.
  cudaFuncAttributes attr;
  err = cudaFuncGetAttributes(&attr, probe_kernel);
  if (err != cudaSuccess) {
    cudaGetLastError();
    st.reason = "device " + st.name + " (compute capability " + std::to_string(prop.major) + "." +
                std::to_string(prop.minor) + ") cannot run this build's kernels (" +
                cudaGetErrorString(err) + "); rebuild with CMAKE_CUDA_ARCHITECTURES including it";
    return st;
  }
  st.available = true;
  return st;
}

// Rough device bytes one decoded image needs.
double render_bytes(const RenderJob& j, bool as_u8) {
  const double px = double(j.width) * j.height;
  const double tiles = double((j.width + kTileSize - 1) / kTileSize) * ((j.height + kTileSize - 1) / kTileSize);
  return px * (as_u8 ? 3 : 12) + double(j.n) * (32 + sizeof(DevSplat) + 4 + 2 * 8 * 16) + tiles * 24;
}

// Single-image scaffolding of the test hooks.
struct Single {
  Stream s;
  BatchLayout batch;
  TileBins bins;
  DeviceBuffer<float> params;
  DeviceBuffer<DevSplat> splats;
  Single(const float* p, int n, int width, int height) {
    if (n < 0 || width < 1 || height < 1) throw std::invalid_argument("bad hook arguments");
    batch.build({{width, height}}, {n});
    batch.host[0].loss_scale = 2.f / float(size_t(3) * size_t(width) * size_t(height));
    batch.upload(s);
    params.allocate(size_t(n) * kParamsPerSplat, s);
    params.upload(p, size_t(n) * kParamsPerSplat, s);
    splats.allocate(n, s);
    bins.init(batch.n_tiles, s);
  }
  TileLists bin(bool force_direct) {
    return bin_exact_sorted(Units::kPixel, params.get(), batch.view(), splats.get(), bins,
                            force_direct ? 0ull : ~0ull, s);
  }
};

}  // namespace

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so later calls start clean
  std::string msg = std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                    ") in " + what + " at " + base_name(file) + ":" + std::to_string(line);
  if (err == cudaErrorMemoryAllocation) msg += "; out of GPU memory: use a smaller batch";
  throw std::runtime_error(msg);
}

DeviceStatus device_status() {
  static const DeviceStatus status = query_device();  // thread-safe, once
  return status;
}

// Every entry point calls this first: a clear error instead of a failed launch.
void require_device() {
  const DeviceStatus st = device_status();
  if (!st.available) throw std::runtime_error("CUDA backend unavailable: " + st.reason);
  static std::once_flag once;
  std::call_once(once, [] {
    // Keep up to 1 GiB of freed blocks in the stream-ordered pool between
    // calls, so repeated decodes do not go back to the driver for memory.
    int dev = 0;
    cudaMemPool_t pool;
    if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess) {
      uint64_t keep = 1ull << 30;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    cudaGetLastError();
  });
}

void BatchLayout::build(const std::vector<std::pair<int, int>>& sizes, const std::vector<int>& caps) {
  host.assign(sizes.size(), ImageDesc{});
  long long slots = 0, tiles = 0, pixels = 0;
  for (size_t b = 0; b < sizes.size(); ++b) {
    ImageDesc& d = host[b];
    d.width = sizes[b].first;
    d.height = sizes[b].second;
    d.tiles_x = (d.width + kTileSize - 1) / kTileSize;
    d.tiles_y = (d.height + kTileSize - 1) / kTileSize;
    d.tile_off = static_cast<int>(tiles);
    d.splat_off = static_cast<int>(slots);
    d.splat_cap = caps[b];
    d.pix_off = pixels;
    tiles += static_cast<long long>(d.tiles_x) * d.tiles_y;
    slots += caps[b];
    pixels += static_cast<long long>(d.width) * d.height;
    if (tiles > INT_MAX || slots > INT_MAX)
      throw std::invalid_argument("batch too large for one launch (over 2^31 tiles or splats)");
  }
  n_slots = static_cast<int>(slots);
  n_tiles = static_cast<int>(tiles);
  n_pixels = pixels;
}

void BatchLayout::upload(cudaStream_t s) {
  const size_t B = host.size();
  std::vector<int> si(n_slots), ti(n_tiles), caps(B);
  for (size_t b = 0; b < B; ++b) {
    const ImageDesc& d = host[b];
    std::fill_n(si.begin() + d.splat_off, d.splat_cap, static_cast<int>(b));
    std::fill_n(ti.begin() + d.tile_off, d.tiles_x * d.tiles_y, static_cast<int>(b));
    caps[b] = d.splat_cap;
  }
  images.allocate(B, s);
  images.upload(host.data(), B, s);
  slot_image.allocate(si.size(), s);
  slot_image.upload(si.data(), si.size(), s);  // pageable: staged before returning
  tile_image.allocate(ti.size(), s);
  tile_image.upload(ti.data(), ti.size(), s);
  n_active.allocate(B, s);
  n_active.upload(caps.data(), B, s);
}

void render_batch(const std::vector<RenderJob>& jobs, bool as_u8, void* out) {
  require_device();
  size_t free_bytes = 0, total_bytes = 0;
  GS_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  std::vector<double> bytes;
  std::vector<long long> counts;
  for (const RenderJob& j : jobs) {
    if (j.n < 0 || j.width < 1 || j.height < 1) throw std::invalid_argument("bad render job");
    bytes.push_back(render_bytes(j, as_u8));
    counts.push_back(j.n);
  }
  const size_t elem = as_u8 ? 1 : sizeof(float);
  char* dst = static_cast<char*>(out);
  for (const auto& [first, last] : plan_chunks(bytes, counts, 0.5 * double(free_bytes), (1ll << 31) - 1)) {
    Stream s;
    BatchLayout batch;
    std::vector<std::pair<int, int>> sizes;
    std::vector<int> caps;
    for (size_t i = first; i < last; ++i) {
      sizes.emplace_back(jobs[i].width, jobs[i].height);
      caps.push_back(jobs[i].n);
    }
    batch.build(sizes, caps);
    batch.upload(s);
    std::vector<float> rows(size_t(batch.n_slots) * kParamsPerSplat);
    for (size_t i = first; i < last; ++i)
      std::copy_n(jobs[i].params, size_t(jobs[i].n) * kParamsPerSplat,
                  rows.begin() + size_t(batch.host[i - first].splat_off) * kParamsPerSplat);
    DeviceBuffer<float> params(rows.size(), s);
    params.upload(rows.data(), rows.size(), s);
    DeviceBuffer<DevSplat> splats(batch.n_slots, s);
    TileBins bins;
    bins.init(batch.n_tiles, s);
    const TileLists lists = bin_exact_sorted(Units::kNormalized, params.get(), batch.view(), splats.get(),
                                             bins, sorted_pair_budget(free_bytes), s);
    const size_t n_out = size_t(3) * batch.n_pixels;
    DeviceBuffer<unsigned char> image(n_out * elem, s);
    launch_render_forward(as_u8 ? Output::kInterleavedU8 : Output::kInterleavedF32, batch.view(),
                          splats.get(), lists, image.get(), nullptr, s);
    image.download(reinterpret_cast<unsigned char*>(dst), n_out * elem, s);
    s.sync();
    dst += n_out * elem;
  }
}

std::vector<float> render_px(const float* params, int n, int width, int height, bool force_direct) {
  require_device();
  Single one(params, n, width, height);
  const TileLists lists = one.bin(force_direct);
  DeviceBuffer<float> image(size_t(3) * width * height, one.s);
  launch_render_forward(Output::kInterleavedF32, one.batch.view(), one.splats.get(), lists, image.get(),
                        nullptr, one.s);
  std::vector<float> out(image.size());
  image.download(out.data(), out.size(), one.s);
  one.s.sync();
  return out;
}

std::vector<float> render_backward_px(const float* params, int n, int width, int height,
                                      const float* grad_image, bool force_direct) {
  require_device();
  Single one(params, n, width, height);
  const TileLists lists = one.bin(force_direct);
  DeviceBuffer<float> gi(size_t(3) * width * height, one.s), grad(size_t(n) * kParamsPerSplat, one.s);
  gi.upload(grad_image, gi.size(), one.s);
  grad.zero(one.s);
  launch_backward_from_image(one.batch.view(), one.splats.get(), lists, gi.get(), grad.get(), one.s);
  std::vector<float> out(grad.size());
  grad.download(out.data(), out.size(), one.s);
  one.s.sync();
  return out;
}

std::vector<float> fit_grad_px(const float* params, int n, int width, int height, const uint8_t* target,
                               bool force_direct) {
  require_device();
  Single one(params, n, width, height);
  const TileLists lists = one.bin(force_direct);
  const long long px = static_cast<long long>(width) * height;
  DeviceBuffer<unsigned char> rgb(size_t(3) * px, one.s);
  DeviceBuffer<uchar4> packed(px, one.s);
  DeviceBuffer<float> grad(size_t(n) * kParamsPerSplat, one.s);
  rgb.upload(target, rgb.size(), one.s);
  launch_pack_rgb(rgb.get(), px, packed.get(), one.s);
  grad.zero(one.s);
  launch_fit_tiles(one.batch.view(), one.splats.get(), lists, packed.get(), grad.get(), one.s);
  std::vector<float> out(grad.size());
  grad.download(out.data(), out.size(), one.s);
  one.s.sync();
  return out;
}

std::pair<std::vector<long long>, std::vector<int>> bin_tiles_px(const float* params, int n, int width,
                                                                 int height) {
  require_device();
  Single one(params, n, width, height);
  unsigned long long pairs = 0;
  bin_exact_sorted(Units::kPixel, one.params.get(), one.batch.view(), one.splats.get(),
                   one.bins, ~0ull, one.s, &pairs);
  std::vector<unsigned long long> start(size_t(one.bins.n_tiles) + 1);
  std::vector<int> ids(pairs);
  one.bins.start.download(start.data(), start.size(), one.s);
  one.bins.ids_sorted.download(ids.data(), ids.size(), one.s);
  one.s.sync();
  return {std::vector<long long>(start.begin(), start.end()), ids};
}

void prune(float* params, float* m, float* v, int n_images, int n_slots_per_image,
           std::vector<int>& n_active, float threshold) {
  require_device();
  if (n_images < 1 || n_slots_per_image < 1 || n_active.size() != size_t(n_images))
    throw std::invalid_argument("bad prune arguments");
  for (int n : n_active)
    if (n < 1 || n > n_slots_per_image) throw std::invalid_argument("n_active out of range");
  Stream s;
  BatchLayout batch;
  batch.build(std::vector<std::pair<int, int>>(n_images, {1, 1}), std::vector<int>(n_images, n_slots_per_image));
  batch.upload(s);
  batch.n_active.upload(n_active.data(), n_active.size(), s);
  const size_t rows = size_t(n_images) * n_slots_per_image * kParamsPerSplat;
  DeviceBuffer<float> dp(rows, s), dm(rows, s), dv(rows, s);
  dp.upload(params, rows, s);
  dm.upload(m, rows, s);
  dv.upload(v, rows, s);
  launch_prune(dp.get(), dm.get(), dv.get(), batch.view(), threshold, s);
  dp.download(params, rows, s);
  dm.download(m, rows, s);
  dv.download(v, rows, s);
  batch.n_active.download(n_active.data(), n_active.size(), s);
  s.sync();
}

}  // namespace gs::gpu
