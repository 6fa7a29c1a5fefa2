#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "../fit_options.h"  // shared by every build: must stay generic too
#include "../parallel_errors.h"
#include "isa_target.h"        // after the standard headers, before the kernels

#include "../grid_shape.h"
#include "../splat_math.h"
#include "color_solve.h"
#include "densify.h"
#include "fit.h"
#include "../thread_count.h"
#include "render.h"

namespace gs::cpu::GS_ISA {

namespace {

// Content-adaptive init: blur radius of the gradient energy (pixels), share of
// the draws spread uniformly, and std per sqrt(pixels per splat).
constexpr int kContentBlur = 1;
constexpr double kContentUniformShare = 0.3;
constexpr float kContentStdScale = 0.5f;
// Densification: the same for the residual map.
constexpr int kErrorBlur = 1;
constexpr double kErrorUniformShare = 0.05;
constexpr float kDensifyStdScale = 0.5f;
// Coarse to fine runs only when the half-size image keeps both sides at least
// this long: smaller images are cheap already and lose detail.
constexpr int kMinCoarseSide = 128;

// One image's optimization state. Parameters are kept in the optimizer's units:
// x/cell, y/cell, log a, b/cell, log c, r, g, b (cell = sqrt(W*H/N) pixels).
class Fitter {
 public:
  // warm_start: normalized rows to start from (FitOptions::init_params), or null.
  Fitter(const ImageView& img, const FitOptions& opts, bool parallel,
         const std::vector<float>* warm_start)
      : opts_(opts), warm_start_(warm_start), full_w_(img.width), full_h_(img.height),
        w_(img.width), h_(img.height), parallel_(parallel), plane_(size_t(img.width) * img.height) {
    target_.resize(3 * plane_);
    for (size_t p = 0; p < plane_; ++p)
      for (int ch = 0; ch < 3; ++ch) target_[ch * plane_ + p] = img.pixels[3 * p + ch] / 255.0f;
    cell_ = full_cell_ = std::sqrt(float(w_) * float(h_) / float(opts.n_splats));
    render_.resize(3 * plane_);
    grad_image_.resize(3 * plane_);
  }

  FitResult run() {
    begin();
    for (int it = 1; it <= opts_.iterations; ++it) {
      if (opts_.cancel && opts_.cancel->load(std::memory_order_relaxed)) {
        FitResult r;
        r.cancelled = true;
        return r;
      }
      snap_ = it > opts_.iterations - opts_.qat_iterations;
      if (coarse_ > 0 && it == coarse_ + 1) set_scale(1);
      step(it);
      maybe_prune(it);
      if (phase_due(it)) between_phases(it);
    }
    end();
    return result();
  }

  // The fit's phases around its steps; the CUDA driver runs the steps on the
  // device and these here (FitterPhases below).

  // Initialization, fresh optimizer state, the first colour solve.
  void begin() {
    held_ = warm_start_ ? 0 : densify_held(opts_);
    const int n0 = opts_.n_splats - held_;
    if (warm_start_) init_warm(*warm_start_);
    else if (opts_.init == InitMode::kGrid) init_grid(n0);
    else if (opts_.init == InitMode::kContent) init_content(n0);
    else init_random(n0);
    m_.assign(params_.size(), 0.f);
    v_.assign(params_.size(), 0.f);
    age_.assign(n(), 0);
    if (opts_.color_solve && !warm_start_) solve_colors();
    const bool coarse_fits = std::min(w_, h_) >= 2 * kMinCoarseSide;
    coarse_ = coarse_fits ? std::min(opts_.iterations - 1, int(opts_.coarse_fraction * opts_.iterations)) : 0;
    if (coarse_ > 0) set_scale(2);
  }

  // Whether a densification round falls on step `it` (after its prune).
  bool phase_due(int it) const {
    return round_ <= opts_.densify_rounds && held_ > 0 && densify_iteration(round_, opts_) == it;
  }

  // After a step where phase_due: every round due then (short runs put
  // several on one step), then the colours for the new geometry. Needs the
  // step's render and loss gradient (render_, grad_image_).
  void between_phases(int it) {
    for (; phase_due(it); ++round_) densify(round_);
    if (opts_.color_solve) solve_colors();
  }

  void end() {
    if (opts_.color_solve && opts_.iterations > 0) solve_colors();
  }

  // The render of the last step, computed elsewhere (interleaved H x W x 3),
  // and its loss gradient, as step() leaves them.
  void load_render(const float* interleaved) {
    for (size_t p = 0; p < plane_; ++p)
      for (int ch = 0; ch < 3; ++ch) render_[ch * plane_ + p] = interleaved[3 * p + ch];
    l2_loss_and_grad(render_.data(), target_.data(), 3 * plane_, grad_image_.data(), parallel_);
  }

  SplatState state() { return {params_, m_, v_, age_}; }

 private:
  int n() const { return static_cast<int>(params_.size() / kParamsPerSplat); }

  // Fits the image at 1/factor of its size from now on (factor 1 or 2, 2x2
  // averages; an odd last row or column averages what it has). The parameters
  // stay: positions and the shear are in cell units and the cell scales with
  // the image; the log sizes shift by log(factor) (Adam's moments of a log are
  // scale-free).
  void set_scale(int factor) {
    const int old_w = w_;
    w_ = (full_w_ + factor - 1) / factor;
    h_ = (full_h_ + factor - 1) / factor;
    const float log_ratio = std::log(float(old_w == full_w_ ? 1 : 2) / float(factor));
    cell_ = full_cell_ / float(factor);
    if (factor == 1) {
      target_.swap(full_target_);
    } else {
      full_target_.swap(target_);  // keeps the full image
      target_ = downsample2(full_target_, full_w_, full_h_);
    }
    plane_ = size_t(w_) * h_;
    render_.assign(3 * plane_, 0.f);
    grad_image_.assign(3 * plane_, 0.f);
    for (int i = 0; i < n(); ++i) {
      params_[size_t(i) * kParamsPerSplat + kA] += log_ratio;
      params_[size_t(i) * kParamsPerSplat + kC] += log_ratio;
    }
  }

  static std::vector<float> downsample2(const std::vector<float>& img, int w, int h) {
    const int cw = (w + 1) / 2, ch_ = (h + 1) / 2;
    const size_t plane = size_t(w) * h, cplane = size_t(cw) * ch_;
    std::vector<float> out(3 * cplane);
    for (int ch = 0; ch < 3; ++ch)
      for (int y = 0; y < ch_; ++y)
        for (int x = 0; x < cw; ++x) {
          float sum = 0;
          int count = 0;
          for (int dy = 0; dy < 2 && 2 * y + dy < h; ++dy)
            for (int dx = 0; dx < 2 && 2 * x + dx < w; ++dx, ++count)
              sum += img[ch * plane + size_t(2 * y + dy) * w + 2 * x + dx];
          out[ch * cplane + size_t(y) * cw + x] = sum / float(count);
        }
    return out;
  }

  // Pixel splats of the parameters.
  void to_pixel_splats() {
    splats_.resize(n());
    boxes_.resize(n());
    for (int i = 0; i < n(); ++i) {
      const float* p = &params_[size_t(i) * kParamsPerSplat];
      float px[kParamsPerSplat] = {p[kX] * cell_, p[kY] * cell_, std::exp(p[kA]),
                                   p[kB] * cell_, std::exp(p[kC]), p[kR], p[kG], p[kBlue]};
      if (snap_) snap_geometry(px);
      splats_[i] = from_pixel_params(px);
      boxes_[i] = cutoff_box(splats_[i], w_, h_);
    }
  }

  // Straight-through quantization: pixel-space geometry snapped to the grids of
  // a version-2 file (positions in pixels, log l11 / log l22, l21 normalized);
  // the gradient of the snapped render updates the unsnapped parameters.
  void snap_geometry(float* px) const {
    const auto snap = [](double v, double step) { return step * std::rint(v / step); };
    const double w = w_, h = h_;
    const std::array<double, 3>& step = opts_.qat_steps;
    px[kX] = float(snap(px[kX], step[0]));
    px[kY] = float(snap(px[kY], step[0]));
    px[kA] = float(w * std::exp(snap(std::log(px[kA] / w), step[1])));
    px[kB] = float(h * snap(px[kB] / h, step[2]));
    px[kC] = float(h * std::exp(snap(std::log(px[kC] / h), step[1])));
  }

  // Renders the parameters into render_; with_loss_grad: also the loss
  // gradient into grad_image_, in the same pass.
  void forward(bool with_loss_grad = false) {
    to_pixel_splats();
    bin_boxes(boxes_, w_, h_, bins_);
    render_forward(splats_, boxes_, bins_, w_, h_, render_.data(), parallel_,
                   with_loss_grad ? target_.data() : nullptr,
                   with_loss_grad ? grad_image_.data() : nullptr);
  }

  void push_splat(float x, float y, float std_x, float std_y) {
    const float p[kParamsPerSplat] = {x / cell_, y / cell_, std::log(std_x), 0.f,
                                      std::log(std_y), 1.f, 1.f, 1.f};
    params_.insert(params_.end(), p, p + kParamsPerSplat);
  }

  // Paper §4.3: centres on a uniform grid, the isotropic covariance whose 1-sigma
  // circle is the largest circle in the cell, colour = cell mean. N that is not a
  // product nx*ny leaves a few extra splats; they go to the cells whose colour
  // varies most, offset by a quarter cell, at half the width.
  void init_grid(int N) {
    const GridShape grid = grid_shape(N, w_, h_);
    const int nx = grid.nx, ny = grid.ny;
    const float sx = grid.sx, sy = grid.sy, std0 = grid.std0;
    std::vector<int> cell_of;  // grid cell that each splat's colour comes from
    for (int j = 0; j < ny; ++j)
      for (int i = 0; i < nx; ++i) {
        push_splat((i + 0.5f) * sx, (j + 0.5f) * sy, std0, std0);
        cell_of.push_back(j * nx + i);
      }
    const int extra = N - nx * ny;
    std::vector<double> sum(3 * nx * ny, 0.0), sum2(nx * ny, 0.0);
    std::vector<int> count(nx * ny, 0);
    for (int y = 0; y < h_; ++y)
      for (int x = 0; x < w_; ++x) {
        const int c = cell_index(y, sy, ny) * nx + cell_index(x, sx, nx);
        ++count[c];
        for (int ch = 0; ch < 3; ++ch) {
          const double v = target_[ch * plane_ + size_t(y) * w_ + x];
          sum[3 * c + ch] += v;
          sum2[c] += v * v;
        }
      }
    if (extra > 0) {
      std::vector<double> var(nx * ny);
      for (int c = 0; c < nx * ny; ++c) {
        const double k = std::max(1, count[c]);
        double m2 = 0;
        for (int ch = 0; ch < 3; ++ch) m2 += (sum[3 * c + ch] / k) * (sum[3 * c + ch] / k);
        var[c] = sum2[c] / k - m2;
      }
      std::vector<int> order(nx * ny);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return var[a] > var[b]; });
      for (int e = 0; e < extra; ++e) {
        const int c = order[e % (nx * ny)];
        push_splat((c % nx + 0.75f) * sx, (c / nx + 0.75f) * sy, 0.5f * std0, 0.5f * std0);
        cell_of.push_back(c);
      }
    }
    // Overlapping splats sum, so the cell mean is divided by the cell's coverage
    // (the render of unit-colour splats) to start at the right brightness.
    forward();
    std::vector<double> cover(nx * ny, 0.0);
    for (int y = 0; y < h_; ++y)
      for (int x = 0; x < w_; ++x) {
        const int c = cell_index(y, sy, ny) * nx + cell_index(x, sx, nx);
        cover[c] += render_[size_t(y) * w_ + x];
      }
    for (int i = 0; i < n(); ++i) {
      const int c = cell_of[i];
      const double cov = std::max(cover[c], 1e-6);
      for (int ch = 0; ch < 3; ++ch)
        params_[size_t(i) * kParamsPerSplat + kR + ch] = float(sum[3 * c + ch] / cov);
    }
  }

  // Warm start: the given normalized rows in the optimizer's units.
  void init_warm(const std::vector<float>& rows) {
    for (size_t i = 0; i < rows.size() / kParamsPerSplat; ++i) {
      const PixelSplat<float> s = to_pixel_splat(&rows[i * kParamsPerSplat], float(w_), float(h_));
      const float p[kParamsPerSplat] = {s.mx / cell_, s.my / cell_, std::log(s.a), s.b / cell_,
                                        std::log(s.c), s.r, s.g, s.bl};
      params_.insert(params_.end(), p, p + kParamsPerSplat);
    }
  }

  // The ablation's baseline: uniform random centres and colours, the grid's size.
  void init_random(int N) {
    SeededUniform uniform(opts_.seed);
    const float std0 = std::max(kMinStd, 0.5f * cell_);
    for (int i = 0; i < N; ++i) {
      const float x = uniform() * w_;  // named, so the draw order is defined
      const float y = uniform() * h_;
      push_splat(x, y, std0, std0);
    }
    forward();
    double cover = 0;
    for (size_t p = 0; p < plane_; ++p) cover += render_[p];
    const float scale = float(plane_ / std::max(cover, 1e-6));
    for (int i = 0; i < N; ++i)
      for (int ch = 0; ch < 3; ++ch)
        params_[size_t(i) * kParamsPerSplat + kR + ch] = uniform() * scale;
  }

  // Centres drawn from the image's gradient energy (Image-GS), sizes from the
  // local density of the draws; colours by the colour solve when it is on,
  // else the target at the centre divided by the coverage there.
  void init_content(int N) {
    SeededUniform uniform(opts_.seed);
    std::vector<double> energy = gradient_energy(target_.data(), w_, h_);
    box_blur(energy, w_, h_, kContentBlur);
    const float max_std = 0.5f * float(std::max(w_, h_));
    const std::vector<Draw> draws = draw_centres(energy, w_, h_, N, kContentUniformShare, N,
                                                 kContentStdScale, max_std, uniform);
    for (const Draw& d : draws) push_splat(d.x, d.y, d.std, d.std);
    if (opts_.color_solve) return;
    forward();  // unit colours: the coverage
    for (int i = 0; i < N; ++i) {
      float* p = &params_[size_t(i) * kParamsPerSplat];
      const size_t px = pixel_at(p);
      const float cover = std::max(render_[px], 1e-3f);
      for (int ch = 0; ch < 3; ++ch) p[kR + ch] = target_[ch * plane_ + px] / cover;
    }
  }

  size_t pixel_at(const float* p) const {
    const int x = std::clamp(int(p[kX] * cell_), 0, w_ - 1);
    const int y = std::clamp(int(p[kY] * cell_), 0, h_ - 1);
    return size_t(y) * w_ + x;
  }

  // Error-guided densification, round r: adds this round's share of the held
  // back budget and moves the weakest respawn_fraction of the splats, all at
  // centres drawn from the current squared residual. New splats start at the
  // residual at their centre with fresh optimizer state.
  void densify(int r) {
    const int R = opts_.densify_rounds;
    const int add = int(int64_t(held_) * r / R - int64_t(held_) * (r - 1) / R);
    std::vector<int> slots;  // respawned splats, weakest first
    const int respawn = int(opts_.respawn_fraction * n());
    if (respawn > 0) {
      std::vector<float> strength(n());
      for (int i = 0; i < n(); ++i) {
        const float* p = &params_[size_t(i) * kParamsPerSplat];
        strength[i] = (p[kR] * p[kR] + p[kG] * p[kG] + p[kBlue] * p[kBlue]) *
                      std::exp(p[kA] + p[kC]);
      }
      slots.resize(n());
      std::iota(slots.begin(), slots.end(), 0);
      std::stable_sort(slots.begin(), slots.end(),
                       [&](int a, int b) { return strength[a] < strength[b]; });
      slots.resize(respawn);
    }
    std::vector<double> error(plane_, 0.0);
    for (int ch = 0; ch < 3; ++ch)
      for (size_t p = 0; p < plane_; ++p) error[p] += double(grad_image_[ch * plane_ + p]) * grad_image_[ch * plane_ + p];
    box_blur(error, w_, h_, kErrorBlur);
    SeededUniform uniform(opts_.seed + 0x9E3779B97F4A7C15ull * uint64_t(r));
    const float max_std = 0.5f * float(std::max(w_, h_));
    const std::vector<Draw> draws =
        draw_centres(error, w_, h_, add + respawn, kErrorUniformShare, opts_.n_splats,
                     kDensifyStdScale, max_std, uniform);
    // Residual colours need the render the error came from: the splats as they
    // were rendered in the last step, before any of them moves.
    std::vector<float> colors(size_t(3) * draws.size());
    for (size_t k = 0; k < draws.size(); ++k) {
      const size_t px = size_t(std::min(h_ - 1, int(draws[k].y))) * w_ + std::min(w_ - 1, int(draws[k].x));
      for (int ch = 0; ch < 3; ++ch) {
        const float shown = std::clamp(render_[ch * plane_ + px], 0.f, 1.f);
        colors[3 * k + ch] = target_[ch * plane_ + px] - shown;
      }
    }
    for (size_t k = 0; k < draws.size(); ++k) {
      const Draw& d = draws[k];
      int i;
      if (k < slots.size()) {
        i = slots[k];
        const float p[kParamsPerSplat] = {d.x / cell_, d.y / cell_, std::log(d.std), 0.f,
                                          std::log(d.std), 0.f, 0.f, 0.f};
        std::copy_n(p, kParamsPerSplat, params_.begin() + size_t(i) * kParamsPerSplat);
      } else {
        i = n();
        push_splat(d.x, d.y, d.std, d.std);
        m_.resize(params_.size());
        v_.resize(params_.size());
        age_.push_back(0);
      }
      std::fill_n(m_.begin() + size_t(i) * kParamsPerSplat, kParamsPerSplat, 0.f);
      std::fill_n(v_.begin() + size_t(i) * kParamsPerSplat, kParamsPerSplat, 0.f);
      age_[i] = 0;
      for (int ch = 0; ch < 3; ++ch) params_[size_t(i) * kParamsPerSplat + kR + ch] = colors[3 * k + ch];
    }
  }

  // Exact least-squares colours for the current geometry.
  void solve_colors() {
    to_pixel_splats();
    bin_boxes(boxes_, w_, h_, bins_);
    const NormalEquations eq = normal_equations(splats_, boxes_, bins_, target_.data(), w_, h_, parallel_);
    std::vector<double> colors(size_t(3) * n());
    for (int i = 0; i < n(); ++i)
      for (int ch = 0; ch < 3; ++ch) colors[size_t(3) * i + ch] = params_[size_t(i) * kParamsPerSplat + kR + ch];
    gs::cpu::solve_colors(eq, colors.data(), parallel_);
    for (int i = 0; i < n(); ++i)
      for (int ch = 0; ch < 3; ++ch) params_[size_t(i) * kParamsPerSplat + kR + ch] = float(colors[size_t(3) * i + ch]);
  }

  void step(int it) {
    forward(/*with_loss_grad=*/true);
    const float s = lr_scale(it, opts_);
    const float lr[kParamsPerSplat] = {
        opts_.lr_position * s,   opts_.lr_position * s,   opts_.lr_covariance * s,
        opts_.lr_covariance * s, opts_.lr_covariance * s, opts_.lr_color * s,
        opts_.lr_color * s,      opts_.lr_color * s};
    const float b1 = kAdamBeta1, b2 = kAdamBeta2, eps = kAdamEps;
    const float l1 = opts_.l1_color / float(3 * n());
    const float max_log_std = std::log(float(std::max(w_, h_)));
    const float min_log_std = std::log(kMinStd);
    // Each splat's Adam step follows its gradient in the backward pass: params_
    // is not read by the backward (it renders splats_), so no barrier between.
    render_backward_each(splats_, boxes_, w_, h_, grad_image_.data(), parallel_,
                         [&](int i, float* g) {
      float* p = &params_[size_t(i) * kParamsPerSplat];
      // Chain rule from pixel parameters to the optimizer's units.
      g[kX] *= cell_;
      g[kY] *= cell_;
      g[kA] *= splats_[i].a;
      g[kB] *= cell_;
      g[kC] *= splats_[i].c;
      for (int ch = kR; ch <= kBlue; ++ch) g[ch] += l1 * (p[ch] > 0.f ? 1.f : (p[ch] < 0.f ? -1.f : 0.f));
      float* m = &m_[size_t(i) * kParamsPerSplat];
      float* v = &v_[size_t(i) * kParamsPerSplat];
      // Bias correction by the splat's own age: densification adds splats with
      // fresh moments, whose first steps must not be 1/sqrt(1 - b2) too large.
      const int age = ++age_[i];
      const float c1 = 1.f - std::pow(b1, float(age)), c2 = 1.f - std::pow(b2, float(age));
      for (int k = 0; k < kParamsPerSplat; ++k) {
        m[k] = b1 * m[k] + (1.f - b1) * g[k];
        v[k] = b2 * v[k] + (1.f - b2) * g[k] * g[k];
        p[k] -= lr[k] * (m[k] / c1) / (std::sqrt(v[k] / c2) + eps);
      }
      p[kX] = std::clamp(p[kX], 0.f, w_ / cell_);
      p[kY] = std::clamp(p[kY], 0.f, h_ / cell_);
      p[kA] = std::clamp(p[kA], min_log_std, max_log_std);
      p[kC] = std::clamp(p[kC], min_log_std, max_log_std);
    });
  }

  // Paper §4.4, luminance-aware pruning (schedule: prune_due in fit_options.h).
  void maybe_prune(int it) {
    if (!prune_due(it, opts_)) return;
    int kept = 0;
    for (int i = 0; i < n(); ++i) {
      const float* p = &params_[size_t(i) * kParamsPerSplat];
      if (luminance(p[kR], p[kG], p[kBlue]) < opts_.prune_threshold) continue;
      if (kept != i) {
        for (std::vector<float>* arr : {&params_, &m_, &v_})
          std::copy_n(arr->begin() + size_t(i) * kParamsPerSplat, kParamsPerSplat,
                      arr->begin() + size_t(kept) * kParamsPerSplat);
        age_[kept] = age_[i];
      }
      ++kept;
    }
    kept = std::max(kept, 1);  // an image is never left with no splat at all
    pruned_ += n() - kept;
    for (std::vector<float>* arr : {&params_, &m_, &v_}) arr->resize(size_t(kept) * kParamsPerSplat);
    age_.resize(kept);
  }

  FitResult result() {
    to_pixel_splats();
    FitResult r;
    r.width = w_;
    r.height = h_;
    r.iterations = opts_.iterations;
    r.n_initial = n() + pruned_;
    r.params.resize(params_.size());
    for (int i = 0; i < n(); ++i) {
      to_normalized_row(splats_[i], float(w_), float(h_), &r.params[size_t(i) * kParamsPerSplat]);
    }
    // The PSNR of what a decoder makes of the returned splats (the decode render
    // differs from the fit's own in the last bits: it never contracts a*b+c).
    render_normalized(r.params.data(), size_t(n()), w_, h_, render_.data(), parallel_);
    double se = 0;
    for (size_t k = 0; k < 3 * plane_; ++k) {
      const double d = double(to_u8(render_[k])) - std::lround(target_[k] * 255.0);
      se += d * d;
    }
    const double mse = se / double(3 * plane_);
    r.psnr = mse > 0 ? 10.0 * std::log10(255.0 * 255.0 / mse) : 100.0;
    return r;
  }

  const FitOptions& opts_;
  const std::vector<float>* const warm_start_;
  const int full_w_, full_h_;
  int w_, h_;  // of the image being fitted: full size, or half in the coarse phase
  const bool parallel_;
  size_t plane_;
  float cell_, full_cell_;
  std::vector<float> target_, full_target_, render_, grad_image_;
  std::vector<float> params_, m_, v_;
  std::vector<int> age_;  // Adam steps each splat has taken
  int held_ = 0;          // splats densification adds
  int round_ = 1;         // the next densification round
  int pruned_ = 0;
  bool snap_ = false;     // render the geometry snapped to the file's grids
  int coarse_ = 0;        // steps that fit the half-size image (coarse to fine)
  std::vector<PixelSplat<float>> splats_;
  std::vector<PixelBox> boxes_;
  TileBins bins_;
};

// Runs fn(i, team) for every image i. Enough images: one image per thread.
// Otherwise: one image at a time, each using every thread (team) if it is large
// enough to pay for the per-stage barriers (on a busy machine a small image
// fitted by a thread team is hundreds of times slower than by one thread). All
// give bit-identical results (render.h).
template <typename Fn>
void for_each_image(const std::vector<ImageView>& images, const FitOptions& opts, Fn fn) {
  const int b = static_cast<int>(images.size());
  const int threads = opts.threads > 0 ? opts.threads : omp_get_max_threads();
  if (b >= threads && threads > 1) {
    ParallelErrors errors;  // an exception must not leave the parallel region
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int i = 0; i < b; ++i) errors.capture([&] { fn(i, false); });
    errors.rethrow();
  } else {
    const gs::ThreadCount scoped(threads);
    for (int i = 0; i < b; ++i)
      fn(i, threads > 1 && worth_a_thread_team(images[i].width, images[i].height));
  }
}

// One Fitter per image, driven phase by phase (see FitPhases in fit.h).
class FitterPhases final : public FitPhases {
 public:
  FitterPhases(const std::vector<ImageView>& images, const FitOptions& opts)
      : images_(images), opts_(opts), fitters_(images.size()) {
    for_each_image(images_, opts_, [&](int i, bool team) {
      fitters_[i] = std::make_unique<Fitter>(images_[i], opts_, team, nullptr);
    });
  }
  void begin() override {
    for_each_image(images_, opts_, [&](int i, bool) { fitters_[i]->begin(); });
  }
  bool due(int it) const override { return fitters_.front()->phase_due(it); }
  void between(int it, const float* const* renders) override {
    for_each_image(images_, opts_, [&](int i, bool) {
      fitters_[i]->load_render(renders[i]);
      fitters_[i]->between_phases(it);
    });
  }
  void end() override {
    for_each_image(images_, opts_, [&](int i, bool) { fitters_[i]->end(); });
  }
  SplatState state(int image) override { return fitters_[image]->state(); }

 private:
  const std::vector<ImageView> images_;
  const FitOptions opts_;  // the fitters keep a reference
  std::vector<std::unique_ptr<Fitter>> fitters_;
};

}  // namespace

std::vector<FitResult> fit_batch(const std::vector<ImageView>& images, const FitOptions& opts) {
  std::vector<FitResult> results(images.size());
  const auto warm_start = [&](int i) {
    return opts.init_params.empty() ? nullptr : &opts.init_params[i];
  };
  for_each_image(images, opts, [&](int i, bool team) {
    results[i] = Fitter(images[i], opts, team, warm_start(i)).run();
  });
  return results;
}

std::unique_ptr<FitPhases> fit_phases(const std::vector<ImageView>& images, const FitOptions& opts) {
  return std::make_unique<FitterPhases>(images, opts);
}

}  // namespace gs::cpu::GS_ISA
