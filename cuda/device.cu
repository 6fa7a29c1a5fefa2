// Device discovery and the checks every entry point makes first: whether a
// device can run this build's kernels, CUDA errors as exceptions, and the
// stream-ordered memory pool's settings.
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "backend.h"
#include "kernels.cuh"

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

}  // namespace gs::gpu
