// The CUDA backend's test hooks: one image in pixel-unit parameters, the twins
// of the CPU's *_px_f64 hooks in float, and pruning on given arrays.
#include <stdexcept>

#include "backend.h"
#include "kernels.cuh"

namespace gs::gpu {

namespace {

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
  // A hook's output, copied back once the work queued on the stream is done.
  std::vector<float> result(const DeviceBuffer<float>& out) {
    std::vector<float> host(out.size());
    out.download(host.data(), host.size(), s);
    s.sync();
    return host;
  }
  TileLists bin(bool force_direct) {
    return bin_exact_sorted(Units::kPixel, params.get(), batch.view(), splats.get(), bins,
                            force_direct ? 0ull : ~0ull, s);
  }
};

}  // namespace

std::vector<float> render_px(const float* params, int n, int width, int height, bool force_direct) {
  require_device();
  Single one(params, n, width, height);
  const TileLists lists = one.bin(force_direct);
  DeviceBuffer<float> image(size_t(3) * width * height, one.s);
  launch_render_forward(Output::kInterleavedF32, one.batch.view(), one.splats.get(), lists, image.get(),
                        nullptr, one.s);
  return one.result(image);
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
  return one.result(grad);
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
  return one.result(grad);
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

void prune(float* params, float* m, float* v, int* age, int n_images, int n_slots_per_image,
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
  const size_t slots = size_t(n_images) * n_slots_per_image;
  DeviceBuffer<float> dp(rows, s), dm(rows, s), dv(rows, s);
  DeviceBuffer<int> da(slots, s);
  dp.upload(params, rows, s);
  dm.upload(m, rows, s);
  dv.upload(v, rows, s);
  da.upload(age, slots, s);
  launch_prune(dp.get(), dm.get(), dv.get(), da.get(), batch.view(), threshold, s);
  dp.download(params, rows, s);
  dm.download(m, rows, s);
  dv.download(v, rows, s);
  da.download(age, slots, s);
  batch.n_active.download(n_active.data(), n_active.size(), s);
  s.sync();
}

}  // namespace gs::gpu
