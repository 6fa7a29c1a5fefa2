// What the tile kernels (render_forward.cu, render_backward.cu) share: which
// tile a block renders, and staging its splats into shared memory in batches
// of kBlock, so that one global load serves all 256 pixels of the tile.
#pragma once

#include "device.cuh"

namespace gs::gpu {

struct TileJob {
  int image;
  int x0, y0;  // first pixel of the tile
  int x1, y1;  // last pixel, clipped to the image
  bool direct;                 // test every live splat of the image (device.cuh)
  unsigned long long first;    // list: first index into ids; direct: first slot
  unsigned long long n;        // candidates
};

__device__ __forceinline__ TileJob tile_job(const BatchView& batch, const TileLists& lists, int t) {
  TileJob j;
  j.image = batch.tile_image[t];
  const ImageDesc& d = batch.images[j.image];
  const int local = t - d.tile_off;
  j.x0 = (local % d.tiles_x) * kTileSize;
  j.y0 = (local / d.tiles_x) * kTileSize;
  j.x1 = min(j.x0 + kTileSize, d.width) - 1;
  j.y1 = min(j.y0 + kTileSize, d.height) - 1;
  const unsigned long long end = lists.start[t + 1];
  j.direct = end > lists.capacity;
  if (j.direct) {
    j.first = static_cast<unsigned long long>(d.splat_off);
    j.n = static_cast<unsigned long long>(batch.n_active[j.image]);
  } else {
    j.first = lists.start[t];
    j.n = end - j.first;
  }
  return j;
}

struct StageSmem {
  DevSplat splat[kBlock];
  int slot[kBlock];
  int warp_count[kWarps];
};

// Stages candidates [base, base + kBlock) of the job into smem and returns how
// many were staged (block-uniform). In direct mode the candidates are filtered
// by box overlap and compacted keeping their order, so both modes visit a
// tile's splats in slot order once the list is sorted. The caller syncs before
// reading smem and again before the next call.
__device__ __forceinline__ int stage_batch(const TileJob& job, unsigned long long base,
                                           const DevSplat* __restrict__ splats,
                                           const int* __restrict__ ids, StageSmem& sm) {
  const int tid = threadIdx.x;
  const unsigned long long k = base + tid;
  const bool have = k < job.n;
  DevSplat sp;
  int slot = 0;
  if (have) {
    slot = job.direct ? static_cast<int>(job.first + k) : __ldg(ids + job.first + k);
    sp = load_dev_splat(splats + slot);
  }
  const unsigned long long left = job.n - base;
  if (!job.direct) {
    if (have) {
      sm.splat[tid] = sp;
      sm.slot[tid] = slot;
    }
    return left < kBlock ? static_cast<int>(left) : kBlock;
  }
  const bool keep = have && sp.x0 <= sp.x1 && sp.y0 <= sp.y1 && sp.x0 <= job.x1 &&
                    sp.x1 >= job.x0 && sp.y0 <= job.y1 && sp.y1 >= job.y0;
  const unsigned int ballot = __ballot_sync(0xffffffffu, keep);
  const int lane = tid & 31, warp = tid >> 5;
  if (lane == 0) sm.warp_count[warp] = __popc(ballot);
  __syncthreads();
  int offset = 0, total = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const int c = sm.warp_count[w];
    offset += w < warp ? c : 0;
    total += c;
  }
  if (keep) {
    const int pos = offset + __popc(ballot & ((1u << lane) - 1u));
    sm.splat[pos] = sp;
    sm.slot[pos] = slot;
  }
  return total;
}

// Whether the splat's box meets rows [r0, r1]: a warp covers two rows of the
// tile, and skips splats that miss both (a warp-uniform branch).
__device__ __forceinline__ bool rows_meet(const DevSplat& sp, int r0, int r1) {
  return sp.y0 <= r1 && sp.y1 >= r0;
}

// Adds the first n staged splats' contributions to pixel (px, py) of the tile,
// in list order: the forward pass of both the decode and the fused fit step.
// r0, r1 are the two rows the calling warp renders (whole warps skip a splat).
__device__ __forceinline__ void accumulate_staged(const StageSmem& sm, int n, int px, int py,
                                                  int r0, int r1, float& ar, float& ag,
                                                  float& ab) {
  const float fx = float(px) + 0.5f, fy = float(py) + 0.5f;
  for (int j = 0; j < n; ++j) {
    const DevSplat& sp = sm.splat[j];
    if (!rows_meet(sp, r0, r1)) continue;
    if (px >= sp.x0 && px <= sp.x1 && py >= sp.y0 && py <= sp.y1) {
      const float w = weight(as_pixel_splat(sp), fx - sp.mx, fy - sp.my);
      ar += w * sp.r;
      ag += w * sp.g;
      ab += w * sp.bl;
    }
  }
}

// The forward pass of pixel (px, py) over the tile's whole list, a stage at a
// time; returns how many splats the last stage left in smem (the whole list
// when it has at most kBlock splats).
__device__ __forceinline__ int accumulate_list(const TileJob& job, const DevSplat* __restrict__ splats,
                                               const int* __restrict__ ids, StageSmem& sm, int px, int py,
                                               float& ar, float& ag, float& ab) {
  const int r0 = job.y0 + 2 * (threadIdx.x >> 5), r1 = r0 + 1;  // the two rows this warp renders
  int n = 0;
  for (unsigned long long base = 0; base < job.n; base += kBlock) {
    n = stage_batch(job, base, splats, ids, sm);
    __syncthreads();
    accumulate_staged(sm, n, px, py, r0, r1, ar, ag, ab);
    __syncthreads();
  }
  return n;
}

}  // namespace gs::gpu
