// Backward pass over a whole batch, and the fit's fused step.
//
// One block per 16x16 tile. The fused kernel first renders the tile (as
// render_forward.cu does), turns each pixel into the clamped-L2 residual of
// cpu::l2_loss_and_grad and keeps it in shared memory, so neither the render
// nor the image gradient ever goes to global memory. Then each warp takes whole
// (tile, splat) pairs: its lanes walk the part of the splat's box inside the
// tile, each lane sums the gradient's moments (GradMoments) over its pixels and
// converts them, a warp transpose reduction (9 shuffles) folds the 8 sums, and
// 8 lanes issue one atomicAdd each into the splat's gradient row. So a pair
// costs 8 atomics, not 8 per pixel, and lanes never idle on pixels outside the
// splat's box.
//
// The CPU twin is cpu::render_backward (splat-centric, no atomics); the sums
// agree to float rounding, in a different order.
#include "kernels.cuh"
#include "tile.cuh"

namespace gs::gpu {

namespace {

struct Residual {
  float ch[3][kBlock];  // dL/d(pixel colour), planar, tile-local pixel index
};

// One warp, one (tile, splat) pair: accumulate the splat's gradient over the
// pixels of its box inside the tile. Called by all 32 lanes.
__device__ __forceinline__ void pair_grad(const DevSplat& sp, int slot, const TileJob& job,
                                          const Residual& res, float* __restrict__ grad, int lane) {
  const int bx0 = max(sp.x0, job.x0) - job.x0, bx1 = min(sp.x1, job.x1) - job.x0;
  const int by0 = max(sp.y0, job.y0) - job.y0, by1 = min(sp.y1, job.y1) - job.y0;
  const int bw = bx1 - bx0 + 1, bh = by1 - by0 + 1;
  if (bw <= 0 || bh <= 0) return;  // warp-uniform
  const int area = bw * bh;
  const PixelSplat<float> s = as_pixel_splat(sp);
  // Lane k starts at pixel k of the box (row-major) and steps 32 pixels, i.e.
  // `sq` rows and `sr` columns. Exact small-integer division via a reciprocal:
  // the quotients are at least 1/32 away from an integer.
  const float inv_bw = 1.f / float(bw);
  int qy = __float2int_rz((float(lane) + 0.5f) * inv_bw);
  int qx = lane - qy * bw;
  const int sq = __float2int_rz(32.5f * inv_bw), sr = 32 - sq * bw;
  GradMoments<float> m{};
  for (int k = lane; k < area; k += 32) {
    const int lx = bx0 + qx, ly = by0 + qy;
    float y1, y2;
    const float q = power(s, float(job.x0 + lx) + 0.5f - s.mx, float(job.y0 + ly) + 0.5f - s.my, &y1, &y2);
    const float w = weight_from_power(q);
    const int p = ly * kTileSize + lx;
    add_pixel_moments(s, y1, y2, w, res.ch[0][p], res.ch[1][p], res.ch[2][p], m);
    qx += sr;
    qy += sq;
    if (qx >= bw) {
      qx -= bw;
      ++qy;
    }
  }
  // The conversion is linear, so each lane converts its own sums.
  float acc[kParamsPerSplat];
  grad_from_moments(s, m, acc);
  const float total = warp_transpose_sum8(acc, lane);
  if ((lane & 3) == 0 && total != 0.f)
    atomicAdd(grad + size_t(slot) * kParamsPerSplat + (lane >> 2), total);
}

// kFused: forward + residual against `target` (the fit). Otherwise the
// residual is read from `grad_image` (the test hook).
template <bool kFused>
__global__ void __launch_bounds__(kBlock)
backward_kernel(BatchView batch, const DevSplat* __restrict__ splats, TileLists lists,
                const uchar4* __restrict__ target, const float* __restrict__ grad_image,
                float* __restrict__ grad) {
  __shared__ StageSmem sm;
  __shared__ Residual res;
  const TileJob job = tile_job(batch, lists, blockIdx.x);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int px = job.x0 + tid % kTileSize, py = job.y0 + tid / kTileSize;
  const bool inside = px <= job.x1 && py <= job.y1;
  const ImageDesc& d = batch.images[job.image];
  const long long pix = d.pix_off + static_cast<long long>(py) * d.width + px;

  int staged = -1;  // >= 0: the whole list is still staged from the forward pass
  float gr = 0.f, gg = 0.f, gb = 0.f;
  if constexpr (kFused) {
    float ar = 0.f, ag = 0.f, ab = 0.f;
    const int last = accumulate_list(job, splats, lists.ids, sm, px, py, ar, ag, ab);
    if (job.n <= static_cast<unsigned long long>(kBlock)) staged = last;
    if (inside) {
      // cpu::l2_loss_and_grad: the gradient passes straight through the clamp.
      const uchar4 t = target[pix];
      const float scale = d.loss_scale;
      gr = scale * ((ar > 0.f ? (ar < 1.f ? ar : 1.f) : 0.f) - float(t.x) / 255.f);
      gg = scale * ((ag > 0.f ? (ag < 1.f ? ag : 1.f) : 0.f) - float(t.y) / 255.f);
      gb = scale * ((ab > 0.f ? (ab < 1.f ? ab : 1.f) : 0.f) - float(t.z) / 255.f);
    }
  } else {
    if (inside) {
      gr = grad_image[3 * pix];
      gg = grad_image[3 * pix + 1];
      gb = grad_image[3 * pix + 2];
    }
  }
  res.ch[0][tid] = gr;
  res.ch[1][tid] = gg;
  res.ch[2][tid] = gb;
  __syncthreads();

  for (unsigned long long base = 0; base < job.n; base += kBlock) {
    int n = staged;
    if (n < 0) {
      n = stage_batch(job, base, splats, lists.ids, sm);
      __syncthreads();
    }
    for (int j = warp; j < n; j += kWarps) pair_grad(sm.splat[j], sm.slot[j], job, res, grad, lane);
    __syncthreads();
  }
}

}  // namespace

void launch_fit_tiles(const BatchView& batch, const DevSplat* splats, TileLists lists,
                      const uchar4* target, float* grad, cudaStream_t s) {
  if (batch.n_tiles == 0) return;
  backward_kernel<true><<<static_cast<unsigned int>(batch.n_tiles), kBlock, 0, s>>>(
      batch, splats, lists, target, nullptr, grad);
  GS_CUDA_LAUNCHED();
}

void launch_backward_from_image(const BatchView& batch, const DevSplat* splats, TileLists lists,
                                const float* grad_image, float* grad, cudaStream_t s) {
  if (batch.n_tiles == 0) return;
  backward_kernel<false><<<static_cast<unsigned int>(batch.n_tiles), kBlock, 0, s>>>(
      batch, splats, lists, nullptr, grad_image, grad);
  GS_CUDA_LAUNCHED();
}

}  // namespace gs::gpu
