// A small CPU emulator of the CUDA subset that cuda/*.cu uses, for checking the
// kernels' logic on machines without a GPU (see cuda/emu/build.py and
// docs/gpu.md). It is a test tool, not a backend: it says nothing about speed,
// memory coalescing, or races between blocks (blocks run one after another).
//
// What it does check: every thread of a block runs as a fiber on one OS
// thread, switched only at __syncthreads() and warp intrinsics, which behave
// as on a GPU: a barrier needs every thread of the block, a *_sync warp
// intrinsic with a full mask needs all 32 lanes, and a thread that exits or
// waits elsewhere while others wait is reported as a divergence error instead
// of hanging. Device memory is host memory; streams and events complete at once.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

using std::max;
using std::min;

// ---- vector types ------------------------------------------------------------
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(4) uchar4 { unsigned char x, y, z, w; };
struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z, unsigned char w) {
  return {x, y, z, w};
}

// ---- runtime API ---------------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorNotReady = 600,
  cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };
using cudaStream_t = struct emu_stream*;
using cudaEvent_t = struct emu_event*;
using cudaMemPool_t = struct emu_pool*;
constexpr unsigned int cudaStreamNonBlocking = 1;
constexpr unsigned int cudaEventDisableTiming = 2;
struct cudaDeviceProp {
  char name[256];
  int major, minor;
};
struct cudaFuncAttributes {
  int numRegs;
};

namespace emu {
inline cudaError_t& last_error() {
  static thread_local cudaError_t e = cudaSuccess;
  return e;
}
inline cudaError_t fail(cudaError_t e) { return last_error() = e; }
inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace emu

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorLaunchFailure: return "unspecified launch failure (emulator)";
    default: return "invalid argument";
  }
}
inline const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : e == cudaErrorMemoryAllocation ? "cudaErrorMemoryAllocation" : "cudaErrorEmulator";
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error();
  emu::last_error() = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return emu::last_error(); }
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::snprintf(p->name, sizeof p->name, "CUDA emulator on the CPU");
  p->major = 9;
  p->minor = 0;
  return cudaSuccess;
}
template <typename F>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, F) { a->numRegs = 0; return cudaSuccess; }
inline cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* p, int) { *p = nullptr; return cudaSuccess; }
inline cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }
inline cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  *free_b = size_t(8) << 30;
  *total_b = size_t(16) << 30;
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
  *s = reinterpret_cast<cudaStream_t>(new char);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return emu::last_error(); }
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete reinterpret_cast<char*>(s);
  return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) {
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!*p) return emu::fail(cudaErrorMemoryAllocation);
  std::memset(*p, 0xA5, bytes);  // garbage, as fresh device memory is: catches reads of unset data
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMallocHost(void** p, size_t bytes) {
  *p = std::malloc(bytes);
  return *p ? cudaSuccess : emu::fail(cudaErrorMemoryAllocation);
}
inline cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t = nullptr) {
  std::memset(p, v, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t bytes, cudaMemcpyKind, cudaStream_t = nullptr) {
  std::memcpy(d, s, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) {
  *e = reinterpret_cast<cudaEvent_t>(new char);
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<char*>(e);
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }

// ---- the fiber scheduler -------------------------------------------------------------
namespace emu {

struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  dim3 tid;
  bool done = false;
  const char* waiting = nullptr;  // sync point this fiber waits at, for error messages
};

struct Barrier {
  int arrived = 0;
  long generation = 0;
};

struct Block {
  int n = 0;
  std::vector<Fiber> fibers;
  ucontext_t main;
  int current = 0;
  long progress = 0;
  dim3 block_idx, block_dim;
  Barrier block_barrier;
  Barrier warp_barrier[32];
  uint64_t slots[1024];
  std::function<void()> body;
  std::string error;
};

inline Block& block() {
  static Block b;
  return b;
}

inline void yield() {
  Block& b = block();
  swapcontext(&b.fibers[b.current].ctx, &b.main);
}

// Waits until `count` threads arrived; the last arrival releases the others.
inline void arrive(Barrier& bar, int count, const char* what) {
  Block& b = block();
  const long gen = bar.generation;
  if (++bar.arrived == count) {
    bar.arrived = 0;
    ++bar.generation;
    ++b.progress;
    return;
  }
  b.fibers[b.current].waiting = what;
  while (bar.generation == gen) yield();
  b.fibers[b.current].waiting = nullptr;
}

inline void entry() {
  Block& b = block();
  b.body();
  b.fibers[b.current].done = true;
  ++b.progress;
}

inline int warp_size_of(int warp) {
  const int n = block().n;
  return std::min(32, n - warp * 32);
}

inline int linear_tid() {
  const Block& b = block();
  const dim3& t = b.fibers[b.current].tid;
  return int(t.x + b.block_dim.x * (t.y + b.block_dim.y * t.z));
}

inline void check_full_mask(unsigned int mask, const char* what) {
  const int lane_count = warp_size_of(linear_tid() / 32);
  const unsigned int full = lane_count == 32 ? 0xffffffffu : ((1u << lane_count) - 1u);
  if ((mask & full) != full) {
    std::fprintf(stderr, "emulator: %s with a partial mask is not emulated\n", what);
    std::abort();
  }
}

// All lanes publish a value, meet, read, and meet again before the slots are reused.
template <typename F>
inline uint64_t warp_exchange(uint64_t mine, F&& pick, const char* what) {
  Block& b = block();
  const int tid = linear_tid(), warp = tid / 32;
  b.slots[tid] = mine;
  arrive(b.warp_barrier[warp], warp_size_of(warp), what);
  const uint64_t out = pick(b.slots + warp * 32, tid % 32);
  arrive(b.warp_barrier[warp], warp_size_of(warp), what);
  return out;
}

inline void run_grid(unsigned int grid, unsigned int threads, const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(launch_mutex());
  Block& b = block();
  if (threads == 0 || threads > 1024) {
    fail(cudaErrorInvalidValue);
    return;
  }
  b.n = int(threads);
  b.block_dim = dim3{threads, 1, 1};
  if (b.fibers.size() < threads) b.fibers.resize(threads);
  for (unsigned int blk = 0; blk < grid; ++blk) {
    b.block_idx = dim3{blk, 0, 0};
    b.body = body;
    b.block_barrier = Barrier{};
    for (Barrier& w : b.warp_barrier) w = Barrier{};
    for (int t = 0; t < b.n; ++t) {
      Fiber& f = b.fibers[t];
      f.stack.resize(256 * 1024);
      f.done = false;
      f.waiting = nullptr;
      f.tid = dim3{unsigned(t), 0, 0};  // an index: y = z = 0
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack.data();
      f.ctx.uc_stack.ss_size = f.stack.size();
      f.ctx.uc_link = &b.main;
      makecontext(&f.ctx, entry, 0);
    }
    int live = b.n;
    while (live > 0) {
      const long before = b.progress;
      for (int t = 0; t < b.n; ++t) {
        if (b.fibers[t].done) continue;
        b.current = t;
        swapcontext(&b.main, &b.fibers[t].ctx);
        if (b.fibers[t].done) --live;
      }
      if (live > 0 && b.progress == before) {
        std::string msg = "emulator: divergent synchronization in block " + std::to_string(blk) + ":";
        for (int t = 0; t < b.n; ++t)
          msg += " t" + std::to_string(t) + "=" + (b.fibers[t].done ? "exited" : b.fibers[t].waiting ? b.fibers[t].waiting : "?");
        msg = msg.substr(0, 1500);
        msg += " | block barrier " + std::to_string(b.block_barrier.arrived) + "/" + std::to_string(b.n) + ", warps";
        for (int w = 0; w < (b.n + 31) / 32; ++w) msg += " " + std::to_string(b.warp_barrier[w].arrived);
        std::fprintf(stderr, "%s\n", msg.c_str());
        std::abort();  // fibers cannot be unwound; a hang on a GPU, an abort here
      }
    }
  }
}

template <typename... P>
struct Launcher {
  void (*kernel)(P...);
  unsigned int grid, threads;
  template <typename... A>
  void operator()(A&&... args) const {
    if (grid == 0) {
      fail(cudaErrorInvalidValue);
      return;
    }
    auto k = kernel;
    run_grid(grid, threads, [&, k] { k(P(args)...); });
  }
};

template <typename... P>
Launcher<P...> launch(void (*kernel)(P...), unsigned int grid, unsigned int threads) {
  return {kernel, grid, threads};
}

}  // namespace emu

// ---- built-ins -------------------------------------------------------------------------
#define threadIdx (::emu::block().fibers[::emu::block().current].tid)
#define blockIdx (::emu::block().block_idx)
#define blockDim (::emu::block().block_dim)

inline void __syncthreads() {
  emu::Block& b = emu::block();
  emu::arrive(b.block_barrier, b.n, "__syncthreads");
}

template <typename T>
inline T __shfl_xor_sync(unsigned int mask, T v, int lane_mask) {
  static_assert(sizeof(T) <= 8, "shuffle of a small type");
  emu::check_full_mask(mask, "__shfl_xor_sync");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  const uint64_t got = emu::warp_exchange(bits, [&](const uint64_t* s, int lane) { return s[lane ^ lane_mask]; },
                                          "__shfl_xor_sync");
  T out;
  std::memcpy(&out, &got, sizeof out);
  return out;
}

inline unsigned int __ballot_sync(unsigned int mask, int pred) {
  emu::check_full_mask(mask, "__ballot_sync");
  return static_cast<unsigned int>(emu::warp_exchange(
      pred ? 1 : 0,
      [](const uint64_t* s, int) {
        unsigned int b = 0;
        for (int l = 0; l < 32; ++l) b |= (s[l] == 1 ? 1u : 0u) << l;
        return uint64_t(b);
      },
      "__ballot_sync"));
}

inline int __popc(unsigned int v) { return __builtin_popcount(v); }
inline int __float2int_rz(float v) { return static_cast<int>(v); }
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline float atomicAdd(float* p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p = old + v;
  return old;
}
inline int atomicAdd(int* p, int v) {
  const int old = *p;
  *p = old + v;
  return old;
}
