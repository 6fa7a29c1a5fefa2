// The CUDA fitting loop: the whole batch on the device, driven from C++.
//
// Every buffer is allocated once per batch (chunk); an iteration is six
// launches on one stream (preprocess+count, scan, fill, fused tile step, Adam,
// and every prune_every steps the prune) with no host synchronization: the
// host only reads the tile-pair total back asynchronously, a few iterations
// late, to grow the list buffer before it overflows (an overflowing tile
// renders in direct mode meanwhile, so results never depend on it). Syncs
// happen at init (sizing) and at the end (results).
//
// Encoder v2's steps between phases (content init, densification rounds,
// colour solves) run on the host, once per phase, as the CPU fit's own code
// (cpu::FitPhases): at a phase the state comes back (one sync), the host steps
// every image, and the state goes up again. Only the paper's fit (grid or
// random init, no densification, no colour solve) never leaves the device.
//
// The CPU twin is cpu/fit.cpp's Fitter; constants and schedules below follow it.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <vector>

#include "backend.h"
#include "cpu/fit.h"
#include "grid_shape.h"
#include "kernels.cuh"
#include "plan.h"

namespace gs::gpu {

namespace {

constexpr int kRing = 4;         // asynchronous pair-total readbacks in flight

class PinnedRing {
 public:
  PinnedRing() {
    GS_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&values_), kRing * sizeof(unsigned long long)));
    for (int i = 0; i < kRing; ++i) {
      const cudaError_t err = cudaEventCreateWithFlags(&events_[i], cudaEventDisableTiming);
      if (err != cudaSuccess) {
        release();
        GS_CUDA_CHECK(err);
      }
    }
  }
  ~PinnedRing() { release(); }
  PinnedRing(const PinnedRing&) = delete;
  PinnedRing& operator=(const PinnedRing&) = delete;
  unsigned long long* values_ = nullptr;
  cudaEvent_t events_[kRing] = {};
  bool pending_[kRing] = {};

 private:
  void release() {
    for (cudaEvent_t& e : events_)
      if (e) cudaEventDestroy(e), e = nullptr;
    if (values_) cudaFreeHost(values_);
    values_ = nullptr;
  }
};

// Whether a fit has steps between phases that run on the host (else the
// paper's fit, wholly on the device).
bool has_host_phases(const FitOptions& o) {
  return o.init == InitMode::kContent || o.color_solve || densify_held(o) > 0;
}

class BatchFit {
 public:
  BatchFit(const std::vector<ImageView>& images, const FitOptions& opts, size_t free_bytes)
      : images_(images), opts_(opts), n_(opts.n_splats) {
    pair_budget_ = sorted_pair_budget(free_bytes);
  }

  std::vector<FitResult> run() {
    layout();
    upload_targets();
    bins_.init(batch_.n_tiles, stream_);
    const size_t rows = size_t(batch_.n_slots) * kParamsPerSplat;
    params_.allocate(rows, stream_);
    m_.allocate(rows, stream_);
    v_.allocate(rows, stream_);
    grad_.allocate(rows, stream_);
    splats_.allocate(batch_.n_slots, stream_);
    age_.allocate(batch_.n_slots, stream_);
    m_.zero(stream_);
    v_.zero(stream_);
    age_.zero(stream_);
    unsigned long long pairs = 0;
    if (has_host_phases(opts_)) pairs = init_on_host();
    else if (opts_.init == InitMode::kGrid) pairs = init_grid();
    else pairs = init_random();
    reserve_lists(pairs);
    for (int it = 1; it <= opts_.iterations; ++it) {
      // Read on the host between launches: no sync. The steps already queued
      // (a few, at the launch queue's depth) finish before the fit returns.
      if (opts_.cancel && opts_.cancel->load(std::memory_order_relaxed)) return cancelled();
      iterate(it);
    }
    if (phases_) {
      download_state();
      phases_->end();
      upload_state();
    }
    return finish();
  }

 private:
  void layout() {
    std::vector<std::pair<int, int>> sizes;
    for (const ImageView& img : images_) sizes.emplace_back(img.width, img.height);
    batch_.build(sizes, std::vector<int>(images_.size(), n_));
    for (ImageDesc& d : batch_.host) {  // as Fitter's constructor and step()
      const int w = d.width, h = d.height;
      d.cell = std::sqrt(float(w) * float(h) / float(n_));
      d.loss_scale = 2.f / float(size_t(3) * size_t(w) * size_t(h));
      d.x_max = w / d.cell;
      d.y_max = h / d.cell;
      d.min_log_std = std::log(kMinStd);
      d.max_log_std = std::log(float(std::max(w, h)));
    }
    batch_.upload(stream_);
  }

  void upload_targets() {
    DeviceBuffer<unsigned char> rgb(size_t(3) * batch_.n_pixels, stream_);
    for (size_t b = 0; b < images_.size(); ++b)
      rgb.upload(images_[b].pixels, size_t(3) * images_[b].width * images_[b].height, stream_,
                 size_t(3) * batch_.host[b].pix_off);
    target_.allocate(batch_.n_pixels, stream_);
    launch_pack_rgb(rgb.get(), batch_.n_pixels, target_.get(), stream_);
  }

  // Red plane of the render of the current params: with unit colours, the coverage.
  DeviceBuffer<float> coverage(unsigned long long* pairs) {
    const TileLists lists = bin_exact_sorted(Units::kFit, params_.get(), batch_.view(), splats_.get(),
                                             bins_, pair_budget_, stream_, pairs);
    DeviceBuffer<float> cov(batch_.n_pixels, stream_);
    launch_render_forward(Output::kPlane0F32, batch_.view(), splats_.get(), lists, cov.get(), nullptr, stream_);
    return cov;
  }

  // The loop's lists get room for twice the pairs of the live splats.
  // GSCODEC_CUDA_LIST_CAPACITY overrides it, for the tests of the overflow
  // path (direct mode, then growth).
  void reserve_lists(unsigned long long pairs) {
    unsigned long long capacity = std::min(pair_budget_, std::max(2 * pairs, pairs + (1ull << 16)));
    if (const char* forced = std::getenv("GSCODEC_CUDA_LIST_CAPACITY"))
      capacity = std::strtoull(forced, nullptr, 10);
    bins_.reserve(capacity, stream_);
  }

  // Splat-tile pairs of the live splats (a sync).
  unsigned long long count_pairs() {
    unsigned long long pairs = 0;
    bin_exact_sorted(Units::kFit, params_.get(), batch_.view(), splats_.get(), bins_, pair_budget_,
                     stream_, &pairs);
    return pairs;
  }

  // Encoder v2's start, by the CPU fit's code: init and the first colour solve.
  unsigned long long init_on_host() {
    phases_ = cpu::fit_phases(images_, opts_);
    phases_->begin();
    render_.allocate(size_t(3) * batch_.n_pixels, stream_);
    upload_state();
    return count_pairs();
  }

  // The live splats' state of every image, device -> host phases (a sync).
  void download_state() {
    const size_t rows = size_t(batch_.n_slots) * kParamsPerSplat;
    const int B = static_cast<int>(images_.size());
    host_params_.resize(rows);
    host_m_.resize(rows);
    host_v_.resize(rows);
    host_age_.resize(batch_.n_slots);
    host_active_.resize(B);
    params_.download(host_params_.data(), rows, stream_);
    m_.download(host_m_.data(), rows, stream_);
    v_.download(host_v_.data(), rows, stream_);
    age_.download(host_age_.data(), batch_.n_slots, stream_);
    batch_.n_active.download(host_active_.data(), B, stream_);
    stream_.sync();
    for (int b = 0; b < B; ++b) {
      const cpu::SplatState st = phases_->state(b);
      const size_t first = size_t(batch_.host[b].splat_off), n = size_t(host_active_[b]);
      const auto rows_of = [&](const std::vector<float>& all, std::vector<float>& out) {
        out.assign(all.begin() + first * kParamsPerSplat, all.begin() + (first + n) * kParamsPerSplat);
      };
      rows_of(host_params_, st.params);
      rows_of(host_m_, st.m);
      rows_of(host_v_, st.v);
      st.age.assign(host_age_.begin() + first, host_age_.begin() + first + n);
    }
  }

  // Host phases -> device: every image's splats in its first slots.
  void upload_state() {
    const size_t rows = size_t(batch_.n_slots) * kParamsPerSplat;
    const int B = static_cast<int>(images_.size());
    host_params_.assign(rows, 0.f);
    host_m_.assign(rows, 0.f);
    host_v_.assign(rows, 0.f);
    host_age_.assign(batch_.n_slots, 0);
    host_active_.resize(B);
    for (int b = 0; b < B; ++b) {
      const cpu::SplatState st = phases_->state(b);
      const size_t first = size_t(batch_.host[b].splat_off);
      host_active_[b] = static_cast<int>(st.age.size());
      if (host_active_[b] > batch_.host[b].splat_cap)
        throw std::logic_error("a host phase left more splats than the image has slots");
      std::copy(st.params.begin(), st.params.end(), host_params_.begin() + first * kParamsPerSplat);
      std::copy(st.m.begin(), st.m.end(), host_m_.begin() + first * kParamsPerSplat);
      std::copy(st.v.begin(), st.v.end(), host_v_.begin() + first * kParamsPerSplat);
      std::copy(st.age.begin(), st.age.end(), host_age_.begin() + first);
    }
    // Pageable sources: each copy has read its source when it returns.
    params_.upload(host_params_.data(), rows, stream_);
    m_.upload(host_m_.data(), rows, stream_);
    v_.upload(host_v_.data(), rows, stream_);
    age_.upload(host_age_.data(), batch_.n_slots, stream_);
    batch_.n_active.upload(host_active_.data(), B, stream_);
  }

  // After step `it` (whose render is in render_): the host's densification
  // rounds and colour solve for every image.
  void between_phases(int it) {
    host_render_.resize(render_.size());
    render_.download(host_render_.data(), host_render_.size(), stream_);
    download_state();  // syncs, so the render is here too
    std::vector<const float*> renders;
    for (const ImageDesc& d : batch_.host) renders.push_back(host_render_.data() + 3 * d.pix_off);
    phases_->between(it, renders.data());
    upload_state();
    reserve_lists(count_pairs());  // new and moved splats: size the lists now, not a few steps late
  }

  // Fitter::init_grid's grid (grid_shape.h), computed on the host.
  unsigned long long init_grid() {
    const int N = n_;
    GridInit g;
    std::vector<GridDesc> grids(images_.size());
    std::vector<int> cell_image;
    std::vector<unsigned long long> cell_offsets{0};
    bool any_extra = false;
    for (size_t b = 0; b < images_.size(); ++b) {
      const int w = images_[b].width, h = images_[b].height;
      const GridShape shape = grid_shape(N, w, h);
      GridDesc& gd = grids[b];
      gd.nx = shape.nx;
      gd.ny = shape.ny;
      gd.extra = N - shape.nx * shape.ny;
      gd.cell_off = static_cast<int>(cell_image.size());
      gd.sx = shape.sx;
      gd.sy = shape.sy;
      gd.log_std0 = std::log(shape.std0);
      gd.log_std_extra = std::log(0.5f * shape.std0);
      any_extra = any_extra || gd.extra > 0;
      cell_image.insert(cell_image.end(), size_t(shape.nx) * shape.ny, static_cast<int>(b));
      cell_offsets.push_back(cell_image.size());
    }
    const cudaStream_t s = stream_;
    g.n_cells = static_cast<int>(cell_image.size());
    g.grids.allocate(grids.size(), s);
    g.grids.upload(grids.data(), grids.size(), s);
    g.cell_image.allocate(cell_image.size(), s);
    g.cell_image.upload(cell_image.data(), cell_image.size(), s);
    g.cell_offsets.allocate(cell_offsets.size(), s);
    g.cell_offsets.upload(cell_offsets.data(), cell_offsets.size(), s);
    g.sums.allocate(size_t(3) * g.n_cells, s);
    g.var.allocate(g.n_cells, s);
    g.var_sorted.allocate(g.n_cells, s);
    g.order_in.allocate(g.n_cells, s);
    g.order.allocate(g.n_cells, s);
    g.cover.allocate(g.n_cells, s);
    g.cell_of.allocate(batch_.n_slots, s);

    launch_grid_stats(g, batch_.view(), target_.get(), s);
    if (any_extra) sort_grid_cells(g, static_cast<int>(images_.size()), s);
    launch_grid_positions(g, batch_.view(), params_.get(), s);
    unsigned long long pairs = 0;
    const DeviceBuffer<float> cov = coverage(&pairs);
    launch_grid_colors(g, batch_.view(), cov.get(), params_.get(), s);
    return pairs;
  }

  // Fitter::init_random: the generator runs on the host, in the CPU's order.
  unsigned long long init_random() {
    const int N = n_;
    SeededUniform uniform(opts_.seed);
    std::vector<float> u(size_t(5) * N);
    for (size_t k = 0; k < u.size(); ++k) u[k] = uniform();  // x, y per splat, then colours
    std::vector<float> log_std0;
    for (const ImageDesc& d : batch_.host) log_std0.push_back(std::log(std::max(kMinStd, 0.5f * d.cell)));
    const cudaStream_t s = stream_;
    DeviceBuffer<float> du(u.size(), s), dl(log_std0.size(), s);
    du.upload(u.data(), u.size(), s);
    dl.upload(log_std0.data(), log_std0.size(), s);
    launch_random_positions(du.get(), batch_.view(), dl.get(), params_.get(), s);
    unsigned long long pairs = 0;
    const DeviceBuffer<float> cov = coverage(&pairs);
    launch_random_colors(du.get(), batch_.view(), cov.get(), params_.get(), s);
    return pairs;
  }

  void iterate(int it) {
    const cudaStream_t s = stream_;
    const BatchView view = batch_.view();
    launch_preprocess(Units::kFit, params_.get(), view, splats_.get(), bins_, grad_.get(), s);
    scan_tiles(bins_, s);
    watch_pairs(it);
    launch_fill(view, splats_.get(), bins_, s);
    launch_fit_tiles(view, splats_.get(), bins_.lists(), target_.get(), grad_.get(), s);
    // A phase after this step needs the render its residual comes from.
    const bool phase = phases_ && phases_->due(it);
    if (phase)
      launch_render_forward(Output::kInterleavedF32, view, splats_.get(), bins_.lists(), render_.get(),
                            nullptr, s);
    const float sc = lr_scale(it, opts_);
    AdamStep st;
    st.lr_position = opts_.lr_position * sc;
    st.lr_covariance = opts_.lr_covariance * sc;
    st.lr_color = opts_.lr_color * sc;
    st.l1_color = opts_.l1_color;
    launch_adam(params_.get(), m_.get(), v_.get(), age_.get(), grad_.get(), view, st, s);
    if (prune_due(it, opts_))
      launch_prune(params_.get(), m_.get(), v_.get(), age_.get(), view, opts_.prune_threshold, s);
    if (phase) between_phases(it);
  }

  // Reads the pair total back without blocking: a copy into pinned memory and
  // an event per iteration, looked at (never waited on) kRing iterations later.
  // Grows the lists (stream-ordered, so no sync) when they run 80% full.
  void watch_pairs(int it) {
    const int k = it % kRing;
    if (ring_.pending_[k]) {
      const cudaError_t q = cudaEventQuery(ring_.events_[k]);
      if (q == cudaErrorNotReady) {
        if (cudaPeekAtLastError() == cudaErrorNotReady) cudaGetLastError();
        return;  // still running: skip this round
      }
      GS_CUDA_CHECK(q);
      ring_.pending_[k] = false;
      const unsigned long long pairs = ring_.values_[k];
      if (pairs > bins_.capacity / 5 * 4 && bins_.capacity < pair_budget_)
        bins_.reserve(std::min(pair_budget_, pairs + pairs / 2 + (1ull << 16)), stream_);
    }
    GS_CUDA_CHECK(cudaMemcpyAsync(&ring_.values_[k], bins_.start.get() + bins_.n_tiles,
                                  sizeof(unsigned long long), cudaMemcpyDeviceToHost, stream_));
    GS_CUDA_CHECK(cudaEventRecord(ring_.events_[k], stream_));
    ring_.pending_[k] = true;
  }

  // As cpu::fit_batch after a cancel: one result per image, marked, no splats.
  std::vector<FitResult> cancelled() {
    stream_.sync();
    std::vector<FitResult> out(images_.size());
    for (FitResult& r : out) r.cancelled = true;
    return out;
  }

  std::vector<FitResult> finish() {
    const cudaStream_t s = stream_;
    const BatchView view = batch_.view();
    const TileLists lists = bin_exact_sorted(Units::kFit, params_.get(), view, splats_.get(), bins_,
                                             pair_budget_, s);
    const int B = static_cast<int>(images_.size());
    DeviceBuffer<unsigned long long> se(B, s);
    se.zero(s);
    launch_render_forward(Output::kSquaredError, view, splats_.get(), lists, se.get(), target_.get(), s);
    DeviceBuffer<float> out(size_t(batch_.n_slots) * kParamsPerSplat, s);
    launch_export(params_.get(), view, out.get(), s);
    std::vector<float> rows(out.size());
    std::vector<int> n_active(B);
    std::vector<unsigned long long> sq(B);
    out.download(rows.data(), rows.size(), s);
    batch_.n_active.download(n_active.data(), B, s);
    se.download(sq.data(), B, s);
    stream_.sync();
    std::vector<FitResult> results(B);
    for (int b = 0; b < B; ++b) {
      const ImageDesc& d = batch_.host[b];
      FitResult& r = results[b];
      r.width = d.width;
      r.height = d.height;
      const double mse = double(sq[b]) / (3.0 * double(d.width) * double(d.height));
      r.psnr = mse > 0 ? 10.0 * std::log10(255.0 * 255.0 / mse) : 100.0;
      r.iterations = opts_.iterations;
      r.n_initial = n_;
      const auto first = rows.begin() + size_t(d.splat_off) * kParamsPerSplat;
      r.params.assign(first, first + size_t(n_active[b]) * kParamsPerSplat);
    }
    return results;
  }

  Stream stream_;  // first: outlives every buffer below
  PinnedRing ring_;
  const std::vector<ImageView>& images_;
  const FitOptions& opts_;
  const int n_;
  unsigned long long pair_budget_ = 0;
  BatchLayout batch_;
  TileBins bins_;
  DeviceBuffer<uchar4> target_;
  DeviceBuffer<float> params_, m_, v_, grad_;
  DeviceBuffer<int> age_;  // Adam steps each splat has taken
  DeviceBuffer<DevSplat> splats_;
  // Encoder v2's host phases (null for the paper's fit), the render they
  // read (H x W x 3 floats per image), and host copies of the state.
  std::unique_ptr<cpu::FitPhases> phases_;
  DeviceBuffer<float> render_;
  std::vector<float> host_params_, host_m_, host_v_, host_render_;
  std::vector<int> host_age_, host_active_;
};

// Rough device bytes one image needs during a fit (see BatchFit's buffers).
double fit_bytes(const ImageView& img, int n, bool host_phases) {
  const double px = double(img.width) * img.height;
  const double tiles = double((img.width + kTileSize - 1) / kTileSize) * ((img.height + kTileSize - 1) / kTileSize);
  return px * (4 + 4 + 3 + (host_phases ? 12 : 0)) +
         double(n) * (5 * 32 + sizeof(DevSplat) + 4 + 16 + 2 * 8 * 16) + tiles * 24;
}

}  // namespace

std::vector<FitResult> fit_batch(const std::vector<ImageView>& images, const FitOptions& opts) {
  require_device();
  if (opts.n_splats < 1) throw std::invalid_argument("n_splats must be at least 1");
  for (const ImageView& img : images)
    if (img.width < 1 || img.height < 1 || double(opts.n_splats) > double(img.width) * img.height)
      throw std::invalid_argument("every image needs at least n_splats pixels");
  size_t free_bytes = 0, total_bytes = 0;
  GS_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  std::vector<double> bytes;
  std::vector<long long> slots;
  for (const ImageView& img : images) {
    bytes.push_back(fit_bytes(img, opts.n_splats, has_host_phases(opts)));
    slots.push_back(opts.n_splats);
  }
  // Slot indices are 32-bit; pixels per chunk stay well inside it too.
  const auto chunks = plan_chunks(bytes, slots, 0.5 * double(free_bytes), (1ll << 31) - 1);
  std::vector<FitResult> results;
  results.reserve(images.size());
  for (const auto& [first, last] : chunks) {
    const std::vector<ImageView> part(images.begin() + first, images.begin() + last);
    std::vector<FitResult> r = BatchFit(part, opts, free_bytes).run();
    for (FitResult& x : r) results.push_back(std::move(x));
  }
  return results;
}

}  // namespace gs::gpu
