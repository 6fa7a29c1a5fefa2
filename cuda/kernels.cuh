// Host-side launchers of every kernel stage, one .cu file per stage, and the
// small host objects that own a batch's device arrays. The drivers (fit.cu,
// decode.cu, test_hooks.cu) are written only in terms of these.
#pragma once

#include <utility>
#include <vector>

#include "device.cuh"

namespace gs::gpu {

// ---- batch layout (batch_layout.cu) ------------------------------------------------

// Owns the layout arrays of one batch. build() fills the offsets; a caller may
// then set the fit-only fields of `host` before upload().
struct BatchLayout {
  std::vector<ImageDesc> host;
  DeviceBuffer<ImageDesc> images;
  DeviceBuffer<int> slot_image, tile_image, n_active;
  int n_slots = 0, n_tiles = 0;
  long long n_pixels = 0;

  // sizes[b] = (width, height); caps[b] = slots of image b.
  void build(const std::vector<std::pair<int, int>>& sizes, const std::vector<int>& caps);
  void upload(cudaStream_t s);  // also sets n_active to caps
  BatchView view() const {
    return {images.get(), slot_image.get(), tile_image.get(), n_active.get(),
            static_cast<int>(host.size()), n_slots, n_tiles};
  }
};

// ---- bin_tiles.cu ------------------------------------------------------------

// Per-tile lists by counting sort: preprocess() counts pairs per tile,
// scan() turns counts into list starts, fill() scatters slot ids (and returns
// every count to zero, ready for the next round).
struct TileBins {
  int n_tiles = 0;
  DeviceBuffer<unsigned long long> count;  // n_tiles + 1
  DeviceBuffer<unsigned long long> start;  // n_tiles + 1
  DeviceBuffer<int> ids, ids_sorted;
  DeviceBuffer<unsigned char> scan_temp, sort_temp;
  unsigned long long capacity = 0;

  void init(int tiles, cudaStream_t s);
  void reserve(unsigned long long pairs, cudaStream_t s);  // ids capacity, contents discarded
  TileLists lists() const { return {start.get(), ids.get(), capacity}; }
  TileLists sorted_lists() const { return {start.get(), ids_sorted.get(), capacity}; }
};

// Per slot: read the parameter row, build the DevSplat (empty box for dead
// slots), add its tiles to bins.count, and zero its gradient row if grad != 0.
void launch_preprocess(Units units, const float* params, const BatchView& batch, DevSplat* splats,
                       TileBins& bins, float* grad, cudaStream_t s);
void scan_tiles(TileBins& bins, cudaStream_t s);
void launch_fill(const BatchView& batch, const DevSplat* splats, TileBins& bins, cudaStream_t s);
// Sorts each tile's list by slot id (= splat order, as the CPU renderer sums):
// makes the decode deterministic. `pairs` = the list total (host-known here).
void sort_tiles(TileBins& bins, unsigned long long pairs, cudaStream_t s);

// The whole sequence with exact sizing and sorted lists: preprocess, scan,
// one host sync to read the pair total, fill, sort. For the decode, the fit's
// init and final render, and the test hooks; the fit's loop uses the
// sync-free pieces with a capacity instead. Totals over pair_budget (device
// memory) leave every tile in direct mode.
TileLists bin_exact_sorted(Units units, const float* params, const BatchView& batch, DevSplat* splats,
                           TileBins& bins, unsigned long long pair_budget, cudaStream_t s,
                           unsigned long long* total = nullptr);

// ---- render_forward.cu ---------------------------------------------------------

enum class Output : int {
  kInterleavedU8 = 0,   // decode: H x W x 3 uint8 per image at 3 * pix_off
  kInterleavedF32 = 1,  // decode: H x W x 3 float
  kPlane0F32 = 2,       // red channel only, float at pix_off (coverage of unit-colour splats)
  kSquaredError = 3,    // sum over pixels and channels of (u8 render - target)^2 per image
};

// `out` is uint8_t*, float* or unsigned long long* (kSquaredError: n_images
// sums, accumulated). `target` (uchar4 per pixel) is read by kSquaredError only.
void launch_render_forward(Output mode, const BatchView& batch, const DevSplat* splats,
                           TileLists lists, void* out, const uchar4* target, cudaStream_t s);

// ---- render_backward.cu --------------------------------------------------------

// The fit's fused step: forward, clamped-L2 residual against the target, and
// backward, per tile without an image round trip. grad (n_slots x 8, pixel
// units) must be zero on entry; it is accumulated atomically.
void launch_fit_tiles(const BatchView& batch, const DevSplat* splats, TileLists lists,
                      const uchar4* target, float* grad, cudaStream_t s);
// Backward only, for a given image gradient (interleaved H x W x 3 float at
// 3 * pix_off): the twin of cpu::render_backward for the tests.
void launch_backward_from_image(const BatchView& batch, const DevSplat* splats, TileLists lists,
                                const float* grad_image, float* grad, cudaStream_t s);

// ---- adam_prune.cu -------------------------------------------------------------

struct AdamStep {
  float lr_position, lr_covariance, lr_color;  // already scaled by the schedule
  float l1_color;
};
// age (n_slots): the Adam steps each splat has taken, incremented here; the
// bias correction is 1 - beta^age.
void launch_adam(float* params, float* m, float* v, int* age, const float* grad, const BatchView& batch,
                 const AdamStep& step, cudaStream_t s);
// Luminance-aware pruning: per image, a stable in-place compaction of the live
// slots of params, m, v and age; n_active shrinks (never below 1).
void launch_prune(float* params, float* m, float* v, int* age, const BatchView& batch, float threshold,
                  cudaStream_t s);
// Optimizer units -> normalized rows (the Splats layout), live slots only.
void launch_export(const float* params, const BatchView& batch, float* out, cudaStream_t s);
// uint8 RGB (interleaved, images back to back) -> uchar4 per pixel.
void launch_pack_rgb(const unsigned char* rgb, long long n_pixels, uchar4* out, cudaStream_t s);

// ---- init.cu -------------------------------------------------------------------

// Per image, structured init's grid (computed on the host exactly as
// cpu/fit.cpp does, so positions agree bit for bit).
struct GridDesc {
  int nx, ny, extra;  // extra = N - nx * ny splats placed in the busiest cells
  int cell_off;       // first grid cell of this image in the batch's cell arrays
  float sx, sy;       // cell size, pixels
  float log_std0, log_std_extra;
};

// Device state of the init (cells across the batch).
struct GridInit {
  DeviceBuffer<GridDesc> grids;
  DeviceBuffer<int> cell_image;   // n_cells
  DeviceBuffer<double> sums;      // n_cells x 3 (colour sums)
  DeviceBuffer<double> var;       // n_cells
  DeviceBuffer<double> var_sorted;
  DeviceBuffer<int> order_in, order;  // per image: cells by variance, descending, stable
  DeviceBuffer<int> cell_of;      // n_slots: the cell each splat takes its colour from
  DeviceBuffer<double> cover;     // n_cells
  DeviceBuffer<unsigned long long> cell_offsets;  // n_images + 1
  DeviceBuffer<unsigned char> sort_temp;
  int n_cells = 0;
};

// Colour sums and variance per cell, in the CPU's summation order.
void launch_grid_stats(GridInit& g, const BatchView& batch, const uchar4* target, cudaStream_t s);
// Orders each image's cells by variance (only needed when some image has extras).
void sort_grid_cells(GridInit& g, int n_images, cudaStream_t s);
// Grid (and extra) positions, unit colours, m = v = 0.
void launch_grid_positions(GridInit& g, const BatchView& batch, float* params, cudaStream_t s);
// Coverage (render of unit-colour splats, red plane) summed per cell, then colours.
void launch_grid_colors(GridInit& g, const BatchView& batch, const float* coverage,
                        float* params, cudaStream_t s);

// Random init (the ablation): uniforms drawn on the host (the CPU's generator
// and order), u = [N x (ux, uy)] then [N x (ur, ug, ub)].
void launch_random_positions(const float* u, const BatchView& batch, const float* log_std0,
                             float* params, cudaStream_t s);
void launch_random_colors(const float* u, const BatchView& batch, const float* coverage,
                          float* params, cudaStream_t s);

}  // namespace gs::gpu
