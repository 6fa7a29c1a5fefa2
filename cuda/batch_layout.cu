// BatchLayout: how a batch of images of different sizes shares one launch
// (the layout is described in device.cuh).
#include <algorithm>
#include <climits>
#include <stdexcept>

#include "kernels.cuh"

namespace gs::gpu {

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

}  // namespace gs::gpu
