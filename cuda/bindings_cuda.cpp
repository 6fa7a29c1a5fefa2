// Registers the CUDA backend on gscodec._core (called from cpp/bindings.cpp
// when built with GSCODEC_WITH_CUDA). The public entry points take and return
// exactly what their CPU counterparts (fit, render_batch) do; arguments are
// validated in src/gscodec/engine.py, and the checks here only keep a direct
// caller of the private module from crashing the process.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "backend.h"
#include "cpu/render.h"
#include "core_limits.h"
#include "plan.h"
#include "py_arrays.h"
#include "splat_math.h"

namespace py = pybind11;

namespace gs::gpu {

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

using gs::check_size;
using namespace gs::py_arrays;

py::list fit(const std::vector<CArray<uint8_t>>& images, const FitOptions& opts) {
  const std::vector<ImageView> views = fit_images(images, opts);
  return fit_results(run_interruptible(fit_batch, views, opts));
}

// One host buffer for the whole batch; each image is a view of it.
py::list render(const std::vector<CArray<float>>& params, const std::vector<int>& widths,
                const std::vector<int>& heights, bool as_u8) {
  check_render_args(params, widths, heights);
  std::vector<RenderJob> jobs;
  size_t total = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    jobs.push_back({params[i].data(), static_cast<int>(params[i].shape(0)), widths[i], heights[i]});
    total += size_t(3) * widths[i] * heights[i];
  }
  const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(total)};
  py::array buffer(as_u8 ? py::dtype::of<uint8_t>() : py::dtype::of<float>(), shape);
  void* data = buffer.mutable_data();
  {
    py::gil_scoped_release release;
    render_batch(jobs, as_u8, data);
  }
  py::list out;
  const size_t elem = as_u8 ? 1 : sizeof(float);
  char* at = static_cast<char*>(data);
  for (size_t i = 0; i < jobs.size(); ++i) {
    const py::ssize_t h = heights[i], w = widths[i], e = static_cast<py::ssize_t>(elem);
    out.append(py::array(buffer.dtype(), {h, w, py::ssize_t(3)}, {w * 3 * e, 3 * e, e}, at, buffer));
    at += size_t(3) * w * h * elem;
  }
  return out;
}

py::array render_px_hook(const CArray<float>& params, int width, int height, bool force_direct) {
  check_size(width, height);
  const int n = splat_count(params, "params");
  std::vector<float> img;
  {
    py::gil_scoped_release release;
    img = render_px(params.data(), n, width, height, force_direct);
  }
  CArray<float> out({height, width, 3});
  std::copy(img.begin(), img.end(), out.mutable_data());
  return out;
}

// A gradient hook: n x 8 pixel-unit gradients of params against an H x W x 3
// image (`name`), computed by gradient(params, n, width, height, image).
template <typename T, typename Gradient>
py::array gradient_hook(const CArray<float>& params, int width, int height, const CArray<T>& image,
                        const char* name, Gradient gradient) {
  check_size(width, height);
  check_image(image, width, height, name);
  const int n = splat_count(params, "params");
  std::vector<float> g;
  {
    py::gil_scoped_release release;
    g = gradient(params.data(), n, width, height, image.data());
  }
  return rows_array(g);
}

py::array render_backward_px_hook(const CArray<float>& params, int width, int height,
                                  const CArray<float>& grad_image, bool force_direct) {
  return gradient_hook(params, width, height, grad_image, "grad_image",
                       [force_direct](const float* p, int n, int w, int h, const float* image) {
                         return render_backward_px(p, n, w, h, image, force_direct);
                       });
}

py::array fit_grad_px_hook(const CArray<float>& params, int width, int height, const CArray<uint8_t>& target,
                           bool force_direct) {
  return gradient_hook(params, width, height, target, "target",
                       [force_direct](const float* p, int n, int w, int h, const uint8_t* image) {
                         return fit_grad_px(p, n, w, h, image, force_direct);
                       });
}

py::tuple bin_tiles_hook(const CArray<float>& params, int width, int height) {
  check_size(width, height);
  const int n = splat_count(params, "params");
  auto [offsets, ids] = bin_tiles_px(params.data(), n, width, height);
  return py::make_tuple(py::array_t<long long>(offsets.size(), offsets.data()),
                        py::array_t<int>(ids.size(), ids.data()));
}

// The CPU twin of bin_tiles_hook: cpu::cutoff_box + cpu::bin_boxes.
py::tuple cpu_bin_tiles_hook(const CArray<float>& params, int width, int height) {
  check_size(width, height);
  const int n = splat_count(params, "params");
  std::vector<cpu::PixelBox> boxes(n);
  for (int i = 0; i < n; ++i)
    boxes[i] = cpu::cutoff_box(from_pixel_params(params.data() + size_t(i) * kParamsPerSplat), width, height);
  cpu::TileBins bins;
  cpu::bin_boxes(boxes, width, height, bins);
  std::vector<long long> offsets(bins.offsets.begin(), bins.offsets.end());
  return py::make_tuple(py::array_t<long long>(offsets.size(), offsets.data()),
                        py::array_t<int>(bins.ids.size(), bins.ids.data()));
}

py::tuple prune_hook(const CArray<float>& params, const CArray<float>& m, const CArray<float>& v,
                     const CArray<int>& age, std::vector<int> n_active, float threshold) {
  if (params.ndim() != 3 || params.shape(2) != kParamsPerSplat)
    throw std::invalid_argument("params must have shape (B, N, 8)");
  for (const CArray<float>* a : {&m, &v})
    if (a->ndim() != 3 || a->shape(0) != params.shape(0) || a->shape(1) != params.shape(1) || a->shape(2) != kParamsPerSplat)
      throw std::invalid_argument("m and v must have the shape of params");
  if (age.ndim() != 2 || age.shape(0) != params.shape(0) || age.shape(1) != params.shape(1))
    throw std::invalid_argument("age must have shape (B, N)");
  // Fresh copies: the hook returns new arrays and leaves its inputs alone.
  CArray<float> po(std::vector<py::ssize_t>{params.shape(0), params.shape(1), params.shape(2)});
  CArray<float> mo(std::vector<py::ssize_t>{params.shape(0), params.shape(1), params.shape(2)});
  CArray<float> vo(std::vector<py::ssize_t>{params.shape(0), params.shape(1), params.shape(2)});
  std::copy_n(params.data(), params.size(), po.mutable_data());
  std::copy_n(m.data(), m.size(), mo.mutable_data());
  std::copy_n(v.data(), v.size(), vo.mutable_data());
  CArray<int> ao(std::vector<py::ssize_t>{age.shape(0), age.shape(1)});
  std::copy_n(age.data(), age.size(), ao.mutable_data());
  {
    py::gil_scoped_release release;
    gs::gpu::prune(po.mutable_data(), mo.mutable_data(), vo.mutable_data(), ao.mutable_data(),
                   static_cast<int>(params.shape(0)), static_cast<int>(params.shape(1)), n_active, threshold);
  }
  return py::make_tuple(po, mo, vo, ao, n_active);
}

}  // namespace

void add_backend_info(py::dict& d) {
  const DeviceStatus st = device_status();
  d["cuda_compiled"] = true;
  d["cuda_available"] = st.available;
  d["cuda_devices"] = st.count;
  if (st.available) {
    d["cuda_device"] = st.name;
    d["cuda_compute_capability"] = st.compute_capability;
  } else {
    d["cuda_reason"] = st.reason;
  }
}

void register_bindings(py::module_& m) {
  m.def("_cuda_fit", &fit, py::arg("images"), py::arg("options"),
        "CUDA twin of fit: H x W x 3 uint8 images -> [(params (N, 8) float32, stats dict)].");
  m.def("_cuda_render_batch", &render, py::arg("params"), py::arg("widths"), py::arg("heights"),
        py::arg("as_u8"), "CUDA twin of render_batch.");
  m.def("_cuda_render_px", &render_px_hook, py::arg("params"), py::arg("width"), py::arg("height"),
        py::arg("force_direct") = false);
  m.def("_cuda_render_backward_px", &render_backward_px_hook, py::arg("params"), py::arg("width"),
        py::arg("height"), py::arg("grad_image"), py::arg("force_direct") = false);
  m.def("_cuda_fit_grad_px", &fit_grad_px_hook, py::arg("params"), py::arg("width"), py::arg("height"),
        py::arg("target"), py::arg("force_direct") = false);
  m.def("_cuda_bin_tiles_px", &bin_tiles_hook);
  m.def("_cpu_bin_tiles_px", &cpu_bin_tiles_hook);
  m.def("_cuda_prune", &prune_hook, py::arg("params"), py::arg("m"), py::arg("v"), py::arg("age"),
        py::arg("n_active"), py::arg("threshold"));
  m.def("_cuda_plan_chunks", &plan_chunks, py::arg("bytes"), py::arg("counts"), py::arg("budget"),
        py::arg("max_count"));
}

}  // namespace gs::gpu
