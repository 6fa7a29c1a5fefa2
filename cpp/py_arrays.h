// pybind11 helpers shared by the CPU (cpp/bindings.cpp) and CUDA
// (cuda/bindings_cuda.cpp) bindings: the argument checks that keep a direct
// caller of the private module from crashing the process, and the packing of
// results, so that both backends take and return exactly the same things.
// Messages for users come from the checks in src/gscodec/engine.py.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <string>
#include <vector>

#include "core_limits.h"
#include "fit_options.h"
#include "image_view.h"
#include "splat_math.h"

namespace gs::py_arrays {

namespace py = pybind11;

// Rows of one splat array: splat ids are int on both backends, and 2^30 leaves
// the CUDA kernels' index arithmetic (8 floats a row) headroom.
constexpr long long kMaxRowsPerArray = 1LL << 30;

// The N of an (N, 8) splat array.
inline int splat_count(const py::array& params, const char* name) {
  if (params.ndim() != 2 || params.shape(1) != kParamsPerSplat)
    throw std::invalid_argument(std::string(name) + " must have shape (N, 8)");
  if (params.shape(0) > kMaxRowsPerArray) throw std::invalid_argument(std::string(name) + " has too many rows");
  return static_cast<int>(params.shape(0));
}

template <typename T, int Flags>
const T* splat_rows(const py::array_t<T, Flags>& params, const char* name) {
  splat_count(params, name);
  return params.data();
}

// An H x W x 3 array of the given size.
inline void check_image(const py::array& a, int width, int height, const char* name) {
  if (a.ndim() != 3 || a.shape(0) != height || a.shape(1) != width || a.shape(2) != 3)
    throw std::invalid_argument(std::string(name) + " must have shape (height, width, 3)");
}

// The arguments of render_batch and decode_work: one size per splat array.
template <typename Array>
void check_render_args(const std::vector<Array>& params, const std::vector<int>& widths,
                       const std::vector<int>& heights) {
  if (widths.size() != params.size() || heights.size() != params.size())
    throw std::invalid_argument("params, widths and heights must have the same length");
  for (size_t i = 0; i < params.size(); ++i) {
    check_size(widths[i], heights[i]);
    splat_count(params[i], "params");
  }
}

// The arguments of fit: views of the images, after checking them and the options.
template <int Flags>
std::vector<ImageView> fit_images(const std::vector<py::array_t<uint8_t, Flags>>& images, const FitOptions& opts) {
  std::vector<ImageView> views;
  for (const auto& img : images) {
    if (img.ndim() != 3 || img.shape(2) != 3 || img.shape(0) < 1 || img.shape(1) < 1)
      throw std::invalid_argument("images must be non-empty H x W x 3 uint8 arrays");
    check_size(img.shape(1), img.shape(0));
    views.push_back({img.data(), static_cast<int>(img.shape(1)), static_cast<int>(img.shape(0))});
  }
  if (opts.n_splats < 1 || opts.n_splats > kMaxSplats || opts.iterations < 0 || opts.iterations > kMaxIterations)
    throw std::invalid_argument("options.n_splats or options.iterations is out of range");
  return views;
}

// n x 8 rows, as an (n, 8) array.
inline py::array_t<float, py::array::c_style> rows_array(const std::vector<float>& rows) {
  py::array_t<float, py::array::c_style> out(
      {static_cast<py::ssize_t>(rows.size() / kParamsPerSplat), static_cast<py::ssize_t>(kParamsPerSplat)});
  std::copy(rows.begin(), rows.end(), out.mutable_data());
  return out;
}

// What fit returns: [(params (N, 8) float32, stats dict)].
inline py::list fit_results(const std::vector<FitResult>& results) {
  py::list out;
  for (const FitResult& r : results) {
    py::dict stats;
    stats["psnr"] = r.psnr;
    stats["iterations"] = r.iterations;
    stats["n_initial"] = r.n_initial;
    out.append(py::make_tuple(rows_array(r.params), stats));
  }
  return out;
}

// Runs fit(views, opts) (either backend's fit_batch) on a worker thread while
// this one, every kSignalPollMs, takes the GIL to let Python run its signal
// handlers: Ctrl-C raises KeyboardInterrupt here, and the fit, which polls
// opts.cancel every iteration, stops within a step. Call without the GIL
// released; returns the fit's results.
template <typename Fit>
std::vector<FitResult> run_interruptible(Fit&& fit, const std::vector<ImageView>& views,
                                         const FitOptions& opts) {
  constexpr int kSignalPollMs = 50;
  std::atomic<bool> cancel{false};
  FitOptions worker_opts = opts;
  worker_opts.cancel = &cancel;
  py::gil_scoped_release release;
  std::future<std::vector<FitResult>> done =
      std::async(std::launch::async, [&] { return fit(views, worker_opts); });
  while (done.wait_for(std::chrono::milliseconds(kSignalPollMs)) != std::future_status::ready) {
    py::gil_scoped_acquire acquire;
    if (PyErr_CheckSignals() != 0) {
      cancel = true;
      {
        py::gil_scoped_release wait;
        done.wait();
      }
      throw py::error_already_set();
    }
  }
  return done.get();
}

}  // namespace gs::py_arrays
