// gather family: index_select / index_add and gather / scatter_add with int32 indices.
// index_add and scatter_add are the backward of index_select and gather. They are
// deterministic without atomics: work is split over destinations (inner columns, or
// ranges of destination rows), and each destination sums its sources in ascending
// index-position order, whatever the thread count. Indices are checked at the boundary.
#pragma once
#include "core/tensor.h"

namespace vlm {
namespace cpu {

// O outer, N = x.shape[axis], I inner, M = index size. x contiguous [O, N, I];
// index int32 [M] in [0, N); out contiguous [O, M, I]. Any dtype.
void index_select(const Tensor& x, int64_t axis, const Tensor& index, Tensor& out);

// out contiguous, zero-filled [O, N, I]; index [M] in [0, N); src contiguous [O, M, I]
// (float): out[o, index[j], i] += src[o, j, i].
void index_add(Tensor& out, int64_t axis, const Tensor& index, const Tensor& src);

// index contiguous int32 of shape S (rank of x; S[d] <= x.shape[d] for d != axis);
// out contiguous S: out[p] = x[p with coordinate `axis` := index[p]]. x any strides, any dtype.
void gather(const Tensor& x, int64_t axis, const Tensor& index, Tensor& out);

// out contiguous, zero-filled; index and src contiguous of shape S (src float):
// out[p with coordinate `axis` := index[p]] += src[p].
void scatter_add(Tensor& out, int64_t axis, const Tensor& index, const Tensor& src);

}  // namespace cpu
}  // namespace vlm
