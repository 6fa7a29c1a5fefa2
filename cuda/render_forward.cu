// Forward render of a whole batch: one block per 16x16 tile, one thread per
// pixel, the tile's splats staged through shared memory in batches of 256.
// The CPU twin is cpu::render_forward.
//
// This file is compiled with --fmad=false (CMakeLists.txt), as the CPU decode
// is with -ffp-contract=off: with sorted tile lists each pixel then sums the
// same terms, in the same order, with the same roundings as the CPU decode, so
// a decoded image is the same on both backends.
#include "kernels.cuh"
#include "tile.cuh"

namespace gs::gpu {

namespace {

template <Output M>
__global__ void __launch_bounds__(kBlock)
forward_kernel(BatchView batch, const DevSplat* __restrict__ splats, TileLists lists,
               void* __restrict__ out, const uchar4* __restrict__ target) {
  __shared__ StageSmem sm;
  __shared__ int se_warp[kWarps];
  const TileJob job = tile_job(batch, lists, blockIdx.x);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int px = job.x0 + tid % kTileSize, py = job.y0 + tid / kTileSize;
  float ar = 0.f, ag = 0.f, ab = 0.f;
  accumulate_list(job, splats, lists.ids, sm, px, py, ar, ag, ab);

  const bool inside = px <= job.x1 && py <= job.y1;
  const ImageDesc& d = batch.images[job.image];
  const long long pix = d.pix_off + static_cast<long long>(py) * d.width + px;
  if constexpr (M == Output::kInterleavedU8) {
    if (inside) {
      uint8_t* o = static_cast<uint8_t*>(out) + 3 * pix;
      o[0] = to_u8(ar);
      o[1] = to_u8(ag);
      o[2] = to_u8(ab);
    }
  } else if constexpr (M == Output::kInterleavedF32) {
    if (inside) {
      float* o = static_cast<float*>(out) + 3 * pix;
      o[0] = ar;
      o[1] = ag;
      o[2] = ab;
    }
  } else if constexpr (M == Output::kPlane0F32) {
    if (inside) static_cast<float*>(out)[pix] = ar;
  } else {
    // Squared error of the 8-bit render against the 8-bit target: integers,
    // so the per-image sum is exact whatever the order.
    int se = 0;
    if (inside) {
      const uchar4 t = target[pix];
      const int er = int(to_u8(ar)) - int(t.x), eg = int(to_u8(ag)) - int(t.y),
                eb = int(to_u8(ab)) - int(t.z);
      se = er * er + eg * eg + eb * eb;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) se += __shfl_xor_sync(0xffffffffu, se, o);
    if (lane == 0) se_warp[warp] = se;
    __syncthreads();
    if (tid == 0) {
      long long sum = 0;
      for (int w = 0; w < kWarps; ++w) sum += se_warp[w];
      if (sum) atomicAdd(static_cast<unsigned long long*>(out) + job.image,
                         static_cast<unsigned long long>(sum));
    }
  }
}

}  // namespace

void launch_render_forward(Output mode, const BatchView& batch, const DevSplat* splats,
                           TileLists lists, void* out, const uchar4* target, cudaStream_t s) {
  if (batch.n_tiles == 0) return;
  const unsigned int grid = static_cast<unsigned int>(batch.n_tiles);
  switch (mode) {
    case Output::kInterleavedU8:
      forward_kernel<Output::kInterleavedU8><<<grid, kBlock, 0, s>>>(batch, splats, lists, out, target);
      break;
    case Output::kInterleavedF32:
      forward_kernel<Output::kInterleavedF32><<<grid, kBlock, 0, s>>>(batch, splats, lists, out, target);
      break;
    case Output::kPlane0F32:
      forward_kernel<Output::kPlane0F32><<<grid, kBlock, 0, s>>>(batch, splats, lists, out, target);
      break;
    case Output::kSquaredError:
      forward_kernel<Output::kSquaredError><<<grid, kBlock, 0, s>>>(batch, splats, lists, out, target);
      break;
  }
  GS_CUDA_LAUNCHED();
}

}  // namespace gs::gpu
