// Shared pieces of the CUDA backend: error checks, stream-ordered device
// buffers, the batch layout (ImageDesc) and the per-splat record (DevSplat)
// that the binning, render and fit stages exchange.
//
// Batch layout: a batch of B images is flattened so that one launch covers all
// of it. Image b owns
//   - splat slots [splat_off, splat_off + splat_cap), of which the first
//     n_active[b] are live (pruning shrinks n_active on the device),
//   - pixels [pix_off, pix_off + W*H) of every per-pixel array,
//   - tiles [tile_off, tile_off + tiles_x * tiles_y) of every per-tile array,
// and slot_image / tile_image map a slot or tile back to its image.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "splat_math.h"

namespace gs::gpu {

// Throws std::runtime_error naming the call, the file and CUDA's message. Also
// clears a non-sticky error so that the next call starts clean.
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);

// Every entry point calls this first (device.cu): a clear error when no usable
// device is present, instead of a failed launch.
void require_device();

#define GS_CUDA_CHECK(expr)                                                        \
  do {                                                                             \
    const cudaError_t gs_err_ = (expr);                                            \
    if (gs_err_ != cudaSuccess) ::gs::gpu::throw_cuda_error(gs_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch: catches bad launch configurations at once (faults
// inside a kernel surface at the next synchronizing call, which is checked too).
#define GS_CUDA_LAUNCHED() GS_CUDA_CHECK(cudaGetLastError())

constexpr int kBlock = kTileSize * kTileSize;  // threads per tile block: one per pixel
constexpr int kWarps = kBlock / 32;
static_assert(kBlock % 32 == 0, "a tile block is a whole number of warps");

inline unsigned int blocks_for(long long n, int per_block) {
  return static_cast<unsigned int>((n + per_block - 1) / per_block);
}

// Non-blocking stream owned by one call, so concurrent Python threads do not
// serialize on the legacy default stream.
class Stream {
 public:
  Stream() { GS_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() {
    cudaStreamSynchronize(s_);  // pending frees and copies finish before the stream goes
    cudaStreamDestroy(s_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  operator cudaStream_t() const { return s_; }
  void sync() const { GS_CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};

// Device array allocated from the stream-ordered pool: allocation and release
// cost no device synchronization, so buffers can be resized mid-loop.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t n, cudaStream_t s) { allocate(n, s); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      std::swap(ptr_, o.ptr_);
      std::swap(n_, o.n_);
      std::swap(stream_, o.stream_);
    }
    return *this;
  }

  // Discards the contents.
  void allocate(size_t n, cudaStream_t s) {
    release();
    stream_ = s;
    if (n > 0) GS_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&ptr_), n * sizeof(T), s));
    n_ = n;
  }
  void release() noexcept {
    if (ptr_) cudaFreeAsync(ptr_, stream_);  // errors here are reported by the next check
    ptr_ = nullptr;
    n_ = 0;
  }
  void zero(cudaStream_t s) {
    if (n_ > 0) GS_CUDA_CHECK(cudaMemsetAsync(ptr_, 0, n_ * sizeof(T), s));
  }
  void upload(const T* host, size_t n, cudaStream_t s, size_t offset = 0) {
    if (n > 0) GS_CUDA_CHECK(cudaMemcpyAsync(ptr_ + offset, host, n * sizeof(T), cudaMemcpyHostToDevice, s));
  }
  void download(T* host, size_t n, cudaStream_t s, size_t offset = 0) const {
    if (n > 0) GS_CUDA_CHECK(cudaMemcpyAsync(host, ptr_ + offset, n * sizeof(T), cudaMemcpyDeviceToHost, s));
  }
  T* get() const { return ptr_; }
  size_t size() const { return n_; }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
  cudaStream_t stream_ = nullptr;
};

// One image of a batch (see the layout at the top of this file).
struct ImageDesc {
  int width, height;
  int tiles_x, tiles_y;
  int tile_off;        // first tile
  int splat_off;       // first slot
  int splat_cap;       // slots
  int pad_;
  long long pix_off;   // first pixel
  // Fit only: grid cell (pixels), the loss's 2 / (3 W H), clamp limits in the
  // optimizer's units (positions in cells, Cholesky diagonal as log pixels).
  float cell, loss_scale, x_max, y_max, min_log_std, max_log_std;
};

// Device pointers describing one batch (see the layout at the top).
struct BatchView {
  const ImageDesc* images;
  const int* slot_image;  // n_slots
  const int* tile_image;  // n_tiles
  int* n_active;          // n_images: live slots per image (pruning lowers it)
  int n_images, n_slots, n_tiles;
};

// The prologue of every one-thread-per-slot kernel: this thread's slot, its
// image and the slot's index within the image.
struct ThreadSlot {
  int slot, image, index;
  ImageDesc d;
};
// False for the threads past the batch's last slot.
__device__ __forceinline__ bool thread_slot(const BatchView& batch, ThreadSlot* t) {
  t->slot = blockIdx.x * blockDim.x + threadIdx.x;
  if (t->slot >= batch.n_slots) return false;
  t->image = batch.slot_image[t->slot];
  t->d = batch.images[t->image];
  t->index = t->slot - t->d.splat_off;
  return true;
}

// Per-tile splat lists: tile t holds ids[start[t] .. start[t+1]). A tile whose
// list would end past `capacity` was not stored; the render kernels then test
// every live splat of the tile's image instead ("direct" mode), so a list that
// outgrows its buffer costs speed, never correctness, and needs no host sync.
struct TileLists {
  const unsigned long long* start;  // n_tiles + 1
  const int* ids;
  unsigned long long capacity;
};

// A splat ready for rendering: what the weight and its gradient need, plus the
// clipped pixel box (empty: x0 > x1). 48 bytes = three 16-byte loads.
struct __align__(16) DevSplat {
  float mx, my, inv_a, b;
  float inv_c, r, g, bl;
  int x0, x1, y0, y1;
};

__device__ __forceinline__ PixelSplat<float> as_pixel_splat(const DevSplat& d) {
  PixelSplat<float> s;
  s.mx = d.mx;
  s.my = d.my;
  s.a = 0.f;  // a and c themselves are not needed by weight() or the gradient's moments
  s.b = d.b;
  s.c = 0.f;
  s.inv_a = d.inv_a;
  s.inv_c = d.inv_c;
  s.r = d.r;
  s.g = d.g;
  s.bl = d.bl;
  return s;
}

__device__ __forceinline__ DevSplat load_dev_splat(const DevSplat* p) {
  const float4* q = reinterpret_cast<const float4*>(p);
  const float4 u = __ldg(q), v = __ldg(q + 1);
  const int4 w = __ldg(reinterpret_cast<const int4*>(q + 2));
  DevSplat d;
  d.mx = u.x; d.my = u.y; d.inv_a = u.z; d.b = u.w;
  d.inv_c = v.x; d.r = v.y; d.g = v.z; d.bl = v.w;
  d.x0 = w.x; d.x1 = w.y; d.y0 = w.z; d.y1 = w.w;
  return d;
}

// How a parameter row is read: normalized (the decode path, splat_math's
// to_pixel_splat), pixel units (test hooks), or the fitting loop's optimizer
// units (x/cell, y/cell, log a, b/cell, log c, rgb; see cpu/fit.cpp).
enum class Units : int { kNormalized = 0, kPixel = 1, kFit = 2 };

template <Units U>
__device__ __forceinline__ PixelSplat<float> read_splat(const float* p, const ImageDesc& d) {
  if constexpr (U == Units::kNormalized) {
    return to_pixel_splat(p, float(d.width), float(d.height));
  } else if constexpr (U == Units::kPixel) {
    return from_pixel_params(p);
  } else {
    const float px[kParamsPerSplat] = {p[kX] * d.cell, p[kY] * d.cell, expf(p[kA]),
                                       p[kB] * d.cell, expf(p[kC]),    p[kR],
                                       p[kG],          p[kBlue]};
    return from_pixel_params(px);
  }
}

// Sums 8 per-lane values over a warp with 9 shuffles instead of 8 x 5: each
// butterfly step halves the values a lane carries. Afterwards lane 4k+j (any j)
// holds the warp's total of value k.
__device__ __forceinline__ float warp_transpose_sum8(const float (&v)[8], int lane) {
  const bool b4 = lane & 16, b3 = lane & 8, b2 = lane & 4;
  float u[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float send = b4 ? v[i] : v[i + 4];
    const float keep = b4 ? v[i + 4] : v[i];
    u[i] = keep + __shfl_xor_sync(0xffffffffu, send, 16);
  }
  float w[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float send = b3 ? u[i] : u[i + 2];
    const float keep = b3 ? u[i + 2] : u[i];
    w[i] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
  }
  const float send = b2 ? w[0] : w[1];
  float x = (b2 ? w[1] : w[0]) + __shfl_xor_sync(0xffffffffu, send, 4);
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x;
}

}  // namespace gs::gpu
