// The optimizer side of the fit, on the device: fused chain rule + L1 colour
// penalty + Adam with per-splat bias correction + clamps (one thread per splat), luminance-aware pruning with
// in-place stable compaction (one block per image), and the export of the
// result. The CPU twin is Fitter::step / maybe_prune / result in cpu/fit.cpp;
// the arithmetic below follows it line by line.
#include <cub/block/block_scan.cuh>

#include "fit_options.h"
#include "kernels.cuh"

namespace gs::gpu {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float clampf(float v, float lo, float hi) {
  return v < lo ? lo : (hi < v ? hi : v);  // std::clamp, NaN passes through
}

__global__ void __launch_bounds__(kThreads)
adam_kernel(float* __restrict__ params, float* __restrict__ m, float* __restrict__ v,
            int* __restrict__ age, const float* __restrict__ grad, BatchView batch, AdamStep st) {
  ThreadSlot t;
  if (!thread_slot(batch, &t)) return;
  const int n = batch.n_active[t.image];
  if (t.index >= n) return;
  const int s = t.slot;
  const ImageDesc& d = t.d;
  float* p = params + size_t(s) * kParamsPerSplat;
  float* ms = m + size_t(s) * kParamsPerSplat;
  float* vs = v + size_t(s) * kParamsPerSplat;
  float g[kParamsPerSplat];
#pragma unroll
  for (int k = 0; k < kParamsPerSplat; ++k) g[k] = grad[size_t(s) * kParamsPerSplat + k];
  // Chain rule from pixel parameters to the optimizer's units; a and c as the
  // preprocess of this step computed them.
  g[kX] *= d.cell;
  g[kY] *= d.cell;
  g[kA] *= expf(p[kA]);
  g[kB] *= d.cell;
  g[kC] *= expf(p[kC]);
  const float l1 = st.l1_color / float(3 * n);
#pragma unroll
  for (int ch = kR; ch <= kBlue; ++ch) g[ch] += l1 * (p[ch] > 0.f ? 1.f : (p[ch] < 0.f ? -1.f : 0.f));
  const float lr[kParamsPerSplat] = {st.lr_position,   st.lr_position,   st.lr_covariance,
                                     st.lr_covariance, st.lr_covariance, st.lr_color,
                                     st.lr_color,      st.lr_color};
  // Bias correction by the splat's own age (densification adds fresh splats).
  const int steps = ++age[s];
  const float c1 = 1.f - powf(kAdamBeta1, float(steps)), c2 = 1.f - powf(kAdamBeta2, float(steps));
#pragma unroll
  for (int k = 0; k < kParamsPerSplat; ++k) {
    const float mk = kAdamBeta1 * ms[k] + (1.f - kAdamBeta1) * g[k];
    const float vk = kAdamBeta2 * vs[k] + (1.f - kAdamBeta2) * g[k] * g[k];
    ms[k] = mk;
    vs[k] = vk;
    p[k] -= lr[k] * (mk / c1) / (sqrtf(vk / c2) + kAdamEps);
  }
  p[kX] = clampf(p[kX], 0.f, d.x_max);
  p[kY] = clampf(p[kY], 0.f, d.y_max);
  p[kA] = clampf(p[kA], d.min_log_std, d.max_log_std);
  p[kC] = clampf(p[kC], d.min_log_std, d.max_log_std);
}

// One block per image. Chunks of kThreads slots are read into registers, the
// block agrees on the survivors' ranks (a block scan), and only then writes:
// a survivor moves to a slot at or below its own, so in-place is safe.
__global__ void __launch_bounds__(kThreads)
prune_kernel(float* __restrict__ params, float* __restrict__ m, float* __restrict__ v,
             int* __restrict__ age, BatchView batch, float threshold) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  const int b = blockIdx.x;
  const int base = batch.images[b].splat_off;
  const int n = batch.n_active[b];
  int kept = 0;  // block-uniform
  for (int c = 0; c < n; c += kThreads) {
    const int i = c + threadIdx.x;
    float4 row[3][2];
    int steps = 0;
    bool keep = false;
    if (i < n) {
      steps = age[base + i];
      const size_t at = size_t(base + i) * kParamsPerSplat;
      const float* arrays[3] = {params, m, v};
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        row[a][0] = reinterpret_cast<const float4*>(arrays[a] + at)[0];
        row[a][1] = reinterpret_cast<const float4*>(arrays[a] + at)[1];
      }
      // cpu: `if (luminance(...) < threshold) continue;` -- a NaN luminance survives.
      keep = !(luminance(row[0][1].y, row[0][1].z, row[0][1].w) < threshold);
    }
    int rank, total;
    Scan(scan_tmp).ExclusiveSum(keep ? 1 : 0, rank, total);
    __syncthreads();  // every read of this chunk is done before any write
    if (keep) {
      const size_t at = size_t(base + kept + rank) * kParamsPerSplat;
      float* arrays[3] = {params, m, v};
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        reinterpret_cast<float4*>(arrays[a] + at)[0] = row[a][0];
        reinterpret_cast<float4*>(arrays[a] + at)[1] = row[a][1];
      }
      age[base + kept + rank] = steps;
    }
    kept += total;
    __syncthreads();  // scan_tmp is reused
  }
  // Never leave an image with no splat: slot 0 was not overwritten if kept == 0.
  if (threadIdx.x == 0) batch.n_active[b] = kept > 1 ? kept : 1;
}

__global__ void __launch_bounds__(kThreads)
export_kernel(const float* __restrict__ params, BatchView batch, float* __restrict__ out) {
  ThreadSlot t;
  if (!thread_slot(batch, &t) || t.index >= batch.n_active[t.image]) return;
  const PixelSplat<float> ps = read_splat<Units::kFit>(params + size_t(t.slot) * kParamsPerSplat, t.d);
  to_normalized_row(ps, float(t.d.width), float(t.d.height), out + size_t(t.slot) * kParamsPerSplat);
}

__global__ void __launch_bounds__(kThreads)
pack_rgb_kernel(const unsigned char* __restrict__ rgb, long long n, uchar4* __restrict__ out) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = make_uchar4(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], 0);
}

}  // namespace

void launch_adam(float* params, float* m, float* v, int* age, const float* grad, const BatchView& batch,
                 const AdamStep& step, cudaStream_t s) {
  if (batch.n_slots == 0) return;
  adam_kernel<<<blocks_for(batch.n_slots, kThreads), kThreads, 0, s>>>(params, m, v, age, grad, batch, step);
  GS_CUDA_LAUNCHED();
}

void launch_prune(float* params, float* m, float* v, int* age, const BatchView& batch, float threshold,
                  cudaStream_t s) {
  if (batch.n_images == 0) return;
  prune_kernel<<<static_cast<unsigned int>(batch.n_images), kThreads, 0, s>>>(params, m, v, age, batch,
                                                                              threshold);
  GS_CUDA_LAUNCHED();
}

void launch_export(const float* params, const BatchView& batch, float* out, cudaStream_t s) {
  if (batch.n_slots == 0) return;
  export_kernel<<<blocks_for(batch.n_slots, kThreads), kThreads, 0, s>>>(params, batch, out);
  GS_CUDA_LAUNCHED();
}

void launch_pack_rgb(const unsigned char* rgb, long long n_pixels, uchar4* out, cudaStream_t s) {
  if (n_pixels == 0) return;
  pack_rgb_kernel<<<blocks_for(n_pixels, kThreads), kThreads, 0, s>>>(rgb, n_pixels, out);
  GS_CUDA_LAUNCHED();
}

}  // namespace gs::gpu
