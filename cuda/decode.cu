// The batched decode: every job's splats rendered into one output buffer, in
// chunks that fit the device's free memory (plan.h).
#include <algorithm>
#include <stdexcept>

#include "backend.h"
#include "kernels.cuh"
#include "plan.h"

namespace gs::gpu {

namespace {

// Rough device bytes one decoded image needs.
double render_bytes(const RenderJob& j, bool as_u8) {
  const double px = double(j.width) * j.height;
  const double tiles = double((j.width + kTileSize - 1) / kTileSize) * ((j.height + kTileSize - 1) / kTileSize);
  return px * (as_u8 ? 3 : 12) + double(j.n) * (32 + sizeof(DevSplat) + 4 + 2 * 8 * 16) + tiles * 24;
}

}  // namespace

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

}  // namespace gs::gpu
