// gscodec._core: thin pybind11 bindings. Arguments are validated (with messages
// that name them) in src/gscodec/engine.py; the checks here only keep a direct
// caller of this private module from crashing the process.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <future>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/color_solve.h"
#include "cpu/fit.h"
#include "cpu/geometry_rounding.h"
#include "cpu/loss.h"
#include "cpu/render.h"
#include "core_limits.h"
#include "parallel_errors.h"
#include "py_arrays.h"
#include "splat_math.h"
#include "thread_count.h"

namespace py = pybind11;

#ifdef GSCODEC_WITH_CUDA
namespace gs::gpu {  // cuda/bindings_cuda.cpp
void register_bindings(py::module_& m);
void add_backend_info(py::dict& d);
}  // namespace gs::gpu
#endif

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

using gs::check_size;
using namespace gs::py_arrays;

// planar 3 x H x W -> interleaved H x W x 3 array
template <typename Out, typename T, typename Convert>
py::array interleave(const std::vector<T>& planar, int width, int height, Convert convert) {
  CArray<Out> out({height, width, 3});
  Out* o = out.mutable_data();
  const size_t plane = size_t(width) * height;
  for (size_t p = 0; p < plane; ++p)
    for (int ch = 0; ch < 3; ++ch) o[3 * p + ch] = convert(planar[ch * plane + p]);
  return out;
}

std::vector<float> render_planar(const float* rows, size_t n, int width, int height, bool parallel) {
  std::vector<float> planar(size_t(3) * width * height);
  gs::cpu::render_normalized(rows, n, width, height, planar.data(), parallel);
  return planar;
}

py::list render_batch(const std::vector<CArray<float>>& params, const std::vector<int>& widths,
                      const std::vector<int>& heights, bool as_u8) {
  check_render_args(params, widths, heights);
  const int b = static_cast<int>(params.size());
  std::vector<const float*> rows(b);
  std::vector<size_t> counts(b);
  for (int i = 0; i < b; ++i) {
    rows[i] = params[i].data();
    counts[i] = params[i].shape(0);
  }
  std::vector<std::vector<float>> planar(b);
  {
    py::gil_scoped_release release;
    const bool per_image = b >= omp_get_max_threads() && b > 1;
    gs::ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 1) if (per_image)
    for (int i = 0; i < b; ++i)
      errors.capture([&] {
        planar[i] = render_planar(rows[i], counts[i], widths[i], heights[i],
                                  !per_image && gs::cpu::worth_a_thread_team(widths[i], heights[i]));
      });
    errors.rethrow();
  }
  py::list out;
  for (int i = 0; i < b; ++i) {
    if (as_u8)
      out.append(interleave<uint8_t>(planar[i], widths[i], heights[i], gs::to_u8));
    else
      out.append(interleave<float>(planar[i], widths[i], heights[i], [](float v) { return v; }));
  }
  return out;
}

// Splat x tile pairs each render would bin (cpu::decode_work), for the
// decode-work limit that engine.py checks before rendering on any backend.
std::vector<uint64_t> decode_work(const std::vector<CArray<float>>& params, const std::vector<int>& widths,
                                  const std::vector<int>& heights) {
  check_render_args(params, widths, heights);
  const int b = static_cast<int>(params.size());
  std::vector<const float*> rows(b);
  size_t total = 0;
  for (int i = 0; i < b; ++i) {
    rows[i] = params[i].data();
    total += params[i].shape(0);
  }
  std::vector<uint64_t> work(b);
  py::gil_scoped_release release;
  // About 20 ns a splat: a thread team (costly to wake on a busy CPU) only pays
  // for itself on large batches, such as the thousands of images of a GPU decode.
#pragma omp parallel for schedule(dynamic, 16) if (b > 1 && total >= (size_t(1) << 16))
  for (int i = 0; i < b; ++i)
    work[i] = gs::cpu::decode_work(rows[i], params[i].shape(0), widths[i], heights[i]);
  return work;
}

py::list fit(const std::vector<CArray<uint8_t>>& images, const gs::FitOptions& opts) {
  const std::vector<gs::ImageView> views = fit_images(images, opts);
  if (!opts.init_params.empty()) {
    if (opts.init_params.size() != images.size())
      throw std::invalid_argument("options.init_params must hold one splat set per image");
    for (const std::vector<float>& rows : opts.init_params)
      if (rows.size() != size_t(opts.n_splats) * gs::kParamsPerSplat)
        throw std::invalid_argument("options.init_params: each set must hold n_splats x 8 floats");
  }
  if (opts.qat_iterations < 0 || opts.qat_iterations > opts.iterations)
    throw std::invalid_argument("options.qat_iterations must be in 0..iterations");
  for (double step : opts.qat_steps)
    if (opts.qat_iterations > 0 && !(step > 0 && std::isfinite(step)))
      throw std::invalid_argument("options.qat_steps must be positive and finite");
  return fit_results(run_interruptible(gs::cpu::fit_batch, views, opts));
}

// Test hooks in double precision over pixel-space parameters (x, y, a, b, c, r,
// g, b in pixels), so gradients can be checked against finite differences.
std::vector<gs::PixelSplat<double>> pixel_splats(const CArray<double>& params) {
  const double* rows = splat_rows(params, "params");
  std::vector<gs::PixelSplat<double>> s(params.shape(0));
  for (size_t i = 0; i < s.size(); ++i) s[i] = gs::from_pixel_params(rows + i * gs::kParamsPerSplat);
  return s;
}

py::array render_px_f64(const CArray<double>& params, int width, int height) {
  check_size(width, height);
  const auto splats = pixel_splats(params);
  std::vector<double> planar(size_t(3) * width * height);
  gs::cpu::render_image(splats, width, height, planar.data(), false);
  return interleave<double>(planar, width, height, [](double v) { return v; });
}

py::array render_backward_px_f64(const CArray<double>& params, int width, int height,
                                 const CArray<double>& grad_image) {
  check_size(width, height);
  check_image(grad_image, width, height, "grad_image");
  const auto splats = pixel_splats(params);
  std::vector<gs::cpu::PixelBox> boxes(splats.size());
  for (size_t i = 0; i < splats.size(); ++i) boxes[i] = gs::cpu::cutoff_box(splats[i], width, height);
  const size_t plane = size_t(width) * height;
  std::vector<double> planar(3 * plane);
  for (size_t p = 0; p < plane; ++p)
    for (int ch = 0; ch < 3; ++ch) planar[ch * plane + p] = grad_image.data()[3 * p + ch];
  CArray<double> grad({static_cast<py::ssize_t>(splats.size()),
                       static_cast<py::ssize_t>(gs::kParamsPerSplat)});
  gs::cpu::render_backward(splats, boxes, width, height, planar.data(), grad.mutable_data(), false);
  return grad;
}

// The colour solve over pixel-space splats against an H x W x 3 float target;
// returns the solved (N, 3) colours (the splats' colours are the warm start).
py::array solve_colors_px_f64(const CArray<double>& params, const CArray<double>& target) {
  if (target.ndim() != 3 || target.shape(2) != 3)
    throw std::invalid_argument("target must have shape (height, width, 3)");
  const int height = static_cast<int>(target.shape(0)), width = static_cast<int>(target.shape(1));
  check_size(width, height);
  const auto splats = pixel_splats(params);
  std::vector<gs::cpu::PixelBox> boxes(splats.size());
  for (size_t i = 0; i < splats.size(); ++i) boxes[i] = gs::cpu::cutoff_box(splats[i], width, height);
  gs::cpu::TileBins bins;
  gs::cpu::bin_boxes(boxes, width, height, bins);
  const size_t plane = size_t(width) * height;
  std::vector<double> planar(3 * plane);
  for (size_t p = 0; p < plane; ++p)
    for (int ch = 0; ch < 3; ++ch) planar[ch * plane + p] = target.data()[3 * p + ch];
  const auto eq = gs::cpu::normal_equations(splats, boxes, bins, planar.data(), width, height, false);
  CArray<double> colors({static_cast<py::ssize_t>(splats.size()), py::ssize_t(3)});
  for (size_t i = 0; i < splats.size(); ++i)
    for (int ch = 0; ch < 3; ++ch)
      colors.mutable_data()[3 * i + ch] = params.data()[i * gs::kParamsPerSplat + gs::kR + ch];
  gs::cpu::solve_colors(eq, colors.mutable_data(), false, 1e-20);
  return colors;
}

// An H x W x 3 uint8 image (checked) as planar 3 x H x W floats in [0, 1]: the
// fit's target.
std::vector<float> planar_unit_image(const CArray<uint8_t>& image) {
  if (image.ndim() != 3 || image.shape(2) != 3)
    throw std::invalid_argument("image must have shape (height, width, 3)");
  check_size(static_cast<int>(image.shape(1)), static_cast<int>(image.shape(0)));
  const size_t plane = size_t(image.shape(0)) * image.shape(1);
  std::vector<float> target(3 * plane);
  for (size_t p = 0; p < plane; ++p)
    for (int ch = 0; ch < 3; ++ch) target[ch * plane + p] = image.data()[3 * p + ch] / 255.0f;
  return target;
}

// The normal equations of normalized (N, 8) splats against an H x W x 3 uint8
// image, handed with the splats' colours (N x 3, float64) to `work`, which
// runs without the GIL and updates them; returns them as (N, 3) float32.
template <typename Work>
py::array with_color_equations(const CArray<float>& params, const CArray<uint8_t>& image,
                               int threads, Work work) {
  const float* rows = splat_rows(params, "params");
  const std::vector<float> target = planar_unit_image(image);
  const int height = static_cast<int>(image.shape(0)), width = static_cast<int>(image.shape(1));
  if (threads < 0) throw std::invalid_argument("threads must be >= 0");
  const size_t n = params.shape(0);
  std::vector<gs::PixelSplat<float>> splats(n);
  std::vector<gs::cpu::PixelBox> boxes(n);
  for (size_t i = 0; i < n; ++i) {
    splats[i] = gs::to_pixel_splat(rows + i * gs::kParamsPerSplat, float(width), float(height));
    boxes[i] = gs::cpu::cutoff_box(splats[i], width, height);
  }
  std::vector<double> colors(3 * n);
  for (size_t i = 0; i < n; ++i)
    for (int ch = 0; ch < 3; ++ch) colors[3 * i + ch] = rows[i * gs::kParamsPerSplat + gs::kR + ch];
  {
    py::gil_scoped_release release;
    const gs::ThreadCount scoped(threads > 0 ? threads : omp_get_max_threads());
    const bool parallel = threads != 1 && gs::cpu::worth_a_thread_team(width, height);
    gs::cpu::TileBins bins;
    gs::cpu::bin_boxes(boxes, width, height, bins);
    work(gs::cpu::normal_equations(splats, boxes, bins, target.data(), width, height, parallel),
         colors.data(), parallel);
  }
  CArray<float> out({static_cast<py::ssize_t>(n), py::ssize_t(3)});
  std::transform(colors.begin(), colors.end(), out.mutable_data(), [](double c) { return float(c); });
  return out;
}

// The fit's final colour solve (cpu/fit.cpp, Fitter::solve_colors): the
// least-squares colours for the splats' geometry, warm-started from (and
// ridged towards) their colours. The quantized finish of engine.fit.
py::array solve_colors(const CArray<float>& params, const CArray<uint8_t>& image, int threads) {
  return with_color_equations(params, image, threads,
                              [](const gs::cpu::NormalEquations& eq, double* colors, bool parallel) {
                                gs::cpu::solve_colors(eq, colors, parallel);
                              });
}

// The splats' colours rounded to multiples of `step` for the least L2 error
// (gs::cpu::round_colors_to_grid): the finish's last step before a file.
py::array round_colors(const CArray<float>& params, const CArray<uint8_t>& image, double step,
                       int threads) {
  if (!(step > 0) || !std::isfinite(step))
    throw std::invalid_argument("step must be a positive finite number");
  return with_color_equations(params, image, threads,
                              [step](const gs::cpu::NormalEquations& eq, double* colors, bool) {
                                gs::cpu::round_colors_to_grid(eq, colors, step);
                              });
}

// The splats' geometry rounded to a file's grids for the least L2 error
// against the image, judged with their colours (gs::cpu::round_geometry_to_grid):
// the finish's first step.
py::array round_geometry(const CArray<float>& params, const CArray<uint8_t>& image,
                         double position_step, double log_size_step, double shear_step,
                         int sweeps, int threads) {
  const float* rows = splat_rows(params, "params");
  const std::vector<float> target = planar_unit_image(image);
  const int height = static_cast<int>(image.shape(0)), width = static_cast<int>(image.shape(1));
  for (double step : {position_step, log_size_step, shear_step})
    if (!(step > 0) || !std::isfinite(step))
      throw std::invalid_argument("grid steps must be positive finite numbers");
  if (threads < 0) throw std::invalid_argument("threads must be >= 0");
  if (sweeps < 0) throw std::invalid_argument("sweeps must be >= 0");
  const size_t n = params.shape(0);
  CArray<float> out({static_cast<py::ssize_t>(n), py::ssize_t(gs::kParamsPerSplat)});
  std::copy(rows, rows + n * gs::kParamsPerSplat, out.mutable_data());
  {
    py::gil_scoped_release release;
    const gs::ThreadCount scoped(threads > 0 ? threads : omp_get_max_threads());
    gs::cpu::round_geometry_to_grid(out.mutable_data(), n, target.data(), width, height,
                                    {position_step, log_size_step, shear_step}, sweeps,
                                    threads != 1 && gs::cpu::worth_a_thread_team(width, height));
  }
  return out;
}

// Test hook: gs::cpu::detail::field_slopes of every splat against the
// residual of the splats' own render; returns (slope, curvature), each (N, 5).
py::tuple geometry_slopes(const CArray<float>& params, const CArray<uint8_t>& image,
                          double position_step, double log_size_step, double shear_step) {
  const float* rows = splat_rows(params, "params");
  const std::vector<float> target = planar_unit_image(image);
  const int height = static_cast<int>(image.shape(0)), width = static_cast<int>(image.shape(1));
  const size_t n = params.shape(0);
  std::vector<float> copy(rows, rows + n * gs::kParamsPerSplat);
  const gs::cpu::GeometrySearch search(copy.data(), n, target.data(), width, height,
                                       {position_step, log_size_step, shear_step});
  const py::ssize_t fields = gs::cpu::kGeometryFields;
  CArray<double> slope({static_cast<py::ssize_t>(n), fields}), curvature({static_cast<py::ssize_t>(n), fields});
  for (size_t i = 0; i < n; ++i)
    gs::cpu::detail::field_slopes(search.splats[i], search.residual, width, height, search.grid,
                                  slope.mutable_data() + i * fields,
                                  curvature.mutable_data() + i * fields);
  return py::make_tuple(slope, curvature);
}

py::tuple l2_loss_and_grad_f64(const CArray<double>& render, const CArray<double>& target) {
  if (render.size() != target.size()) throw std::invalid_argument("render and target differ in size");
  CArray<double> grad(std::vector<py::ssize_t>(render.shape(), render.shape() + render.ndim()));
  const double loss = gs::cpu::l2_loss_and_grad(render.data(), target.data(), render.size(),
                                                grad.mutable_data(), false);
  return py::make_tuple(loss, grad);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "gscodec compiled core: batched 2D Gaussian splat fitting and rendering";
  m.attr("POWER_CUTOFF") = gs::kPowerCutoff;
  m.attr("TILE_SIZE") = gs::kTileSize;
  m.attr("MAX_SPLATS") = gs::kMaxSplats;
  m.attr("MAX_SIDE") = gs::kMaxSide;
  m.attr("MAX_PIXELS") = gs::kMaxPixels;
  m.attr("MAX_ITERATIONS") = gs::kMaxIterations;

  m.def("backends", [] {
    py::dict d;
    d["cpu"] = true;
#ifdef GSCODEC_WITH_CUDA
    gs::gpu::add_backend_info(d);  // cuda_compiled, cuda_available, cuda_device, ...
#else
    d["cuda_compiled"] = false;
    d["cuda_available"] = false;
#endif
    d["cpu_threads"] = omp_get_max_threads();
    d["cpu_isa"] = gs::cpu::active_isa();
    return d;
  }, "Which backends were compiled in and which are usable now.");

  py::class_<gs::FitOptions>(m, "FitOptions")
      .def(py::init<>())
      .def_readwrite("n_splats", &gs::FitOptions::n_splats)
      .def_readwrite("iterations", &gs::FitOptions::iterations)
      .def_property("init", [](const gs::FitOptions& o) {
                      return o.init == gs::InitMode::kGrid ? "grid"
                             : o.init == gs::InitMode::kContent ? "content" : "random"; },
                    [](gs::FitOptions& o, const std::string& s) {
                      if (s == "grid") o.init = gs::InitMode::kGrid;
                      else if (s == "random") o.init = gs::InitMode::kRandom;
                      else if (s == "content") o.init = gs::InitMode::kContent;
                      else throw std::invalid_argument("init must be 'grid', 'random' or 'content'");
                    })
      .def_readwrite("seed", &gs::FitOptions::seed)
      .def_readwrite("lr_position", &gs::FitOptions::lr_position)
      .def_readwrite("lr_covariance", &gs::FitOptions::lr_covariance)
      .def_readwrite("lr_color", &gs::FitOptions::lr_color)
      .def_readwrite("lr_final_ratio", &gs::FitOptions::lr_final_ratio)
      .def_readwrite("l1_color", &gs::FitOptions::l1_color)
      .def_readwrite("prune_threshold", &gs::FitOptions::prune_threshold)
      .def_readwrite("prune_every", &gs::FitOptions::prune_every)
      .def_readwrite("densify_fraction", &gs::FitOptions::densify_fraction)
      .def_readwrite("densify_rounds", &gs::FitOptions::densify_rounds)
      .def_readwrite("respawn_fraction", &gs::FitOptions::respawn_fraction)
      .def_readwrite("coarse_fraction", &gs::FitOptions::coarse_fraction)
      .def_readwrite("color_solve", &gs::FitOptions::color_solve)
      .def_readwrite("init_params", &gs::FitOptions::init_params)
      .def_readwrite("qat_iterations", &gs::FitOptions::qat_iterations)
      .def_readwrite("qat_steps", &gs::FitOptions::qat_steps)
      .def_readwrite("threads", &gs::FitOptions::threads);

  m.def("render_batch", &render_batch, py::arg("params"), py::arg("widths"), py::arg("heights"),
        py::arg("as_u8"), "Render normalized (N, 8) float32 splat arrays; returns H x W x 3 arrays.");
  m.def("decode_work", &decode_work, py::arg("params"), py::arg("widths"), py::arg("heights"),
        "Splat x 16x16-tile pairs that rendering each (N, 8) array at its size evaluates.");
  m.def("fit", &fit, py::arg("images"), py::arg("options"),
        "Fit H x W x 3 uint8 images; returns [(params (N, 8) float32, stats dict)].");
  m.def("solve_colors", &solve_colors, py::arg("params"), py::arg("image"), py::arg("threads"),
        "Least-squares colours (N, 3) float32 of normalized (N, 8) splats for an H x W x 3 uint8 "
        "image, as the fit's final colour solve.");
  m.def("round_colors", &round_colors, py::arg("params"), py::arg("image"), py::arg("step"),
        py::arg("threads"),
        "The (N, 3) colours of normalized (N, 8) splats rounded to multiples of step for the "
        "least L2 error against an H x W x 3 uint8 image (integer coordinate descent).");
  m.def("round_geometry", &round_geometry, py::arg("params"), py::arg("image"),
        py::arg("position_step"), py::arg("log_size_step"), py::arg("shear_step"),
        py::arg("sweeps"), py::arg("threads"),
        "Normalized (N, 8) splats with x, y, log a, b, log c on grids of the given steps "
        "(pixels, log units, normalized): from plain rounding, one-step moves that lower the L2 "
        "error against an H x W x 3 uint8 image (greedy local search, at most `sweeps` sweeps, "
        "each after the first over the splats near the last one's moves; the colours judge and "
        "stay; 0 sweeps: plain rounding). The result does not depend on threads.");
  m.def("_render_px_f64", &render_px_f64);
  m.def("_geometry_slopes", &geometry_slopes);
  m.def("_render_backward_px_f64", &render_backward_px_f64);
  m.def("_l2_loss_and_grad_f64", &l2_loss_and_grad_f64);
  m.def("_solve_colors_px_f64", &solve_colors_px_f64);
  m.attr("COLOR_RIDGE") = gs::cpu::kColorRidge;
#ifdef GSCODEC_WITH_CUDA
  gs::gpu::register_bindings(m);  // _cuda_fit, _cuda_render_batch and the CUDA test hooks
#endif
}
