// A 1x1 convolution of patches, ReLU and a 2x2 max-pool (stride 2) as one pass over each image.
//
// inputs  [N, H, W, T, D]  (one patch of D values per position and task; contiguous)
// weight  [T, C, D]
// output  [N, Ho, Wo, T, C] = max over the 2x2 window of relu(weight[t, c] . inputs[n, y, x, t])
// index   [N, Ho, Wo, T, C] uint8: the window position (0..3, row-major) of the maximum, or 4 where the
//         maximum is <= 0 (ReLU's gradient is zero there).
// The [N, H, W, T, C] map before pooling is never written: it is four times the output and the widest
// activation of Conv-4. See metalab/accel/patch_conv_pool.py for the maths and the autograd wiring.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "vec.h"

namespace {

constexpr uint8_t kInactive = 4;

void check_inputs(const at::Tensor& inputs, const at::Tensor& weight) {
  TORCH_CHECK(inputs.dim() == 5, "patch_conv_pool: inputs must be [N, H, W, T, D], got ", inputs.sizes());
  TORCH_CHECK(weight.dim() == 3, "patch_conv_pool: weight must be [T, C, D], got ", weight.sizes());
  TORCH_CHECK(inputs.size(3) == weight.size(0) && inputs.size(4) == weight.size(2),
              "patch_conv_pool: inputs ", inputs.sizes(), " and weight ", weight.sizes(), " disagree on T or D");
  TORCH_CHECK(inputs.scalar_type() == weight.scalar_type(), "patch_conv_pool: inputs and weight dtypes differ");
  TORCH_CHECK(inputs.device().is_cpu() && weight.device().is_cpu(), "patch_conv_pool: CPU tensors only");
}

// Channels are processed in blocks of two 32-byte vectors (16 floats or 8 doubles: two AVX2
// registers), so that the four window positions' sums of a block stay in registers; weights are
// padded to a whole number of blocks.
using metalab_native::Vec;

template <typename scalar_t>
constexpr int64_t kBlock = 2 * Vec<scalar_t>::lanes;

template <typename scalar_t>
inline void window_patches(const scalar_t* in, int64_t image, int64_t i, int64_t j, int64_t t, int64_t h,
                           int64_t w, int64_t tasks, int64_t depth, const scalar_t* patch[4]) {
  for (int a = 0; a < 4; ++a) {
    const int64_t y = 2 * i + a / 2, x = 2 * j + a % 2;
    patch[a] = in + ((image * h + y) * w + x) * tasks * depth + t * depth;
  }
}

// The four window positions' sums of one block of channels: sums[a][half] (two vectors per position).
template <typename scalar_t>
struct WindowSums {
  typename Vec<scalar_t>::type s[4][2];
};

// sums.s[a] = weight[t, c0:c0+kBlock] . patch at window position a, for the 4 positions of a pooling window.
template <typename scalar_t>
inline WindowSums<scalar_t> window_sums(const scalar_t* const patch[4], const scalar_t* w_block, int64_t depth,
                                        int64_t padded) {
  using V = Vec<scalar_t>;
  WindowSums<scalar_t> sums;
  for (int a = 0; a < 4; ++a) sums.s[a][0] = sums.s[a][1] = V::broadcast(0);
  for (int64_t k = 0; k < depth; ++k) {
    const typename V::type w0 = V::load(w_block + k * padded), w1 = V::load(w_block + k * padded + V::lanes);
    for (int a = 0; a < 4; ++a) {
      const typename V::type p = V::broadcast(patch[a][k]);
      sums.s[a][0] += p * w0;
      sums.s[a][1] += p * w1;
    }
  }
  return sums;
}

// Runs body(patch, t, offset) for every pooling window and task, in parallel over rows of windows:
// patch[a] points at the D patch values of window position a, offset at the window's first output channel.
template <typename scalar_t, typename Body>
void for_each_window(const scalar_t* in, int64_t n, int64_t h, int64_t w, int64_t tasks, int64_t channels,
                     int64_t depth, const Body& body) {
  const int64_t ho = h / 2, wo = w / 2;
  at::parallel_for(0, n * ho, 1, [&](int64_t begin, int64_t end) {
    const scalar_t* patch[4];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t image = row / ho, i = row % ho;
      for (int64_t j = 0; j < wo; ++j) {
        for (int64_t t = 0; t < tasks; ++t) {
          window_patches(in, image, i, j, t, h, w, tasks, depth, patch);
          body(patch, t, (((image * ho + i) * wo + j) * tasks + t) * channels);
        }
      }
    }
  });
}

// The window sums w[t, c] . patch of every pooling window, then either
//   forward (kGather false): out = relu(max over the window),
//     index = where the maximum was (kInactive where it is <= 0);
//   gather (kGather true: the adjoint of weight_grad_kernel in grad): out = the sum at the recorded maximum
//     (0 where inactive), index read.
// w_tdc: [T, D, padded] (channels padded to a multiple of kBlock with zeros)
template <typename scalar_t, bool kGather>
void window_kernel(const scalar_t* in, const scalar_t* w_tdc, scalar_t* out, uint8_t* index,
                   int64_t n, int64_t h, int64_t w, int64_t tasks, int64_t channels, int64_t padded, int64_t depth) {
  using V = Vec<scalar_t>;
  using vec = typename V::type;
  constexpr int64_t B = kBlock<scalar_t>, L = V::lanes;
  for_each_window(in, n, h, w, tasks, channels, depth, [&](const scalar_t* const patch[4], int64_t t, int64_t offset) {
    for (int64_t c0 = 0; c0 < channels; c0 += B) {
      const WindowSums<scalar_t> sums = window_sums<scalar_t>(patch, w_tdc + t * depth * padded + c0, depth, padded);
      const vec zero = V::broadcast(0);
      for (int half = 0; half < 2; ++half) {
        const int64_t count = std::min<int64_t>(L, channels - c0 - half * L);
        if (count <= 0) break;
        const int64_t at_channel = offset + c0 + half * L;
        if constexpr (kGather) {
          const typename V::ints where = V::load_bytes_n(index + at_channel, count, kInactive);
          vec value = zero;
          for (int a = 0; a < 4; ++a) value = where == V::splat(a) ? sums.s[a][half] : value;
          V::store_n(out + at_channel, value, count);
        } else {
          vec best = sums.s[0][half];
          typename V::ints at = V::splat(0);
          for (int a = 1; a < 4; ++a) {
            const auto greater = sums.s[a][half] > best;  // strict: the first maximum wins, as in max_pool2d
            best = greater ? sums.s[a][half] : best;
            at = greater ? V::splat(a) : at;
          }
          const auto active = best > zero;
          V::store_n(out + at_channel, active ? best : zero, count);
          V::store_bytes_n(index + at_channel, active ? at : V::splat(kInactive), count);
        }
      }
    }
  });
}

// grad_weight[t, c, k] = sum over pooled positions with an active maximum of grad * inputs at the maximum.
template <typename scalar_t>
void weight_grad_kernel(const scalar_t* grad, const uint8_t* index, const scalar_t* in, scalar_t* grad_weight,
                        int64_t n, int64_t h, int64_t w, int64_t tasks, int64_t channels, int64_t padded,
                        int64_t depth) {
  using V = Vec<scalar_t>;
  using vec = typename V::type;
  constexpr int64_t B = kBlock<scalar_t>, L = V::lanes;
  const int64_t size = tasks * depth * padded;  // accumulated as [T, D, padded]
  const int threads = at::get_num_threads();
  std::vector<scalar_t> partial(static_cast<size_t>(threads) * size, scalar_t(0));
  for_each_window(in, n, h, w, tasks, channels, depth, [&](const scalar_t* const patch[4], int64_t t, int64_t offset) {
    scalar_t* mine = partial.data() + static_cast<size_t>(at::get_thread_num()) * size;
    for (int64_t c0 = 0; c0 < channels; c0 += B) {
      vec masked[4][2];
      for (int half = 0; half < 2; ++half) {
        const int64_t count = std::max<int64_t>(0, std::min<int64_t>(L, channels - c0 - half * L));
        const vec g = V::load_n(grad + offset + c0 + half * L, count), zero = V::broadcast(0);
        const typename V::ints where = V::load_bytes_n(index + offset + c0 + half * L, count, kInactive);
        for (int a = 0; a < 4; ++a) masked[a][half] = where == V::splat(a) ? g : zero;
      }
      scalar_t* g_block = mine + t * depth * padded + c0;
      for (int64_t k = 0; k < depth; ++k) {
        scalar_t* gk = g_block + k * padded;
        vec acc0 = V::load(gk), acc1 = V::load(gk + L);
        for (int a = 0; a < 4; ++a) {
          const vec p = V::broadcast(patch[a][k]);
          acc0 += p * masked[a][0];
          acc1 += p * masked[a][1];
        }
        V::store(gk, acc0);
        V::store(gk + L, acc1);
      }
    }
  });
  // sum the threads' partials and transpose [T, D, padded] -> [T, C, D]
  for (int64_t t = 0; t < tasks; ++t)
    for (int64_t k = 0; k < depth; ++k)
      for (int64_t c = 0; c < channels; ++c) {
        scalar_t total = 0;
        for (int thread = 0; thread < threads; ++thread)
          total += partial[static_cast<size_t>(thread) * size + (t * depth + k) * padded + c];
        grad_weight[(t * channels + c) * depth + k] = total;
      }
}

// weight [T, C, D] -> [T, D, padded], zero-padded channels
at::Tensor padded_weight(const at::Tensor& weight, int64_t block) {
  const int64_t channels = weight.size(1);
  const int64_t padded = (channels + block - 1) / block * block;
  at::Tensor w_tdc = at::zeros({weight.size(0), weight.size(2), padded}, weight.options());
  w_tdc.narrow(2, 0, channels).copy_(weight.transpose(1, 2));
  return w_tdc;
}

std::tuple<at::Tensor, at::Tensor> patch_conv_pool(const at::Tensor& inputs_, const at::Tensor& weight) {
  check_inputs(inputs_, weight);
  const at::Tensor inputs = inputs_.contiguous();
  const int64_t n = inputs.size(0), h = inputs.size(1), w = inputs.size(2), tasks = inputs.size(3);
  const int64_t depth = inputs.size(4), channels = weight.size(1);
  TORCH_CHECK(h >= 2 && w >= 2, "patch_conv_pool: the map must be at least 2x2, got ", h, "x", w);
  at::Tensor out = at::empty({n, h / 2, w / 2, tasks, channels}, inputs.options());
  at::Tensor index = at::empty({n, h / 2, w / 2, tasks, channels}, inputs.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "patch_conv_pool", [&] {
    const at::Tensor w_tdc = padded_weight(weight, kBlock<scalar_t>);
    window_kernel<scalar_t, false>(inputs.data_ptr<scalar_t>(), w_tdc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                             index.data_ptr<uint8_t>(), n, h, w, tasks, channels, w_tdc.size(2), depth);
  });
  return {out, index};
}

void check_index(const at::Tensor& index, const at::Tensor& inputs) {
  TORCH_CHECK(index.is_contiguous() && index.scalar_type() == at::kByte && index.dim() == 5,
              "patch_conv_pool: index must be the contiguous uint8 tensor of the forward");
  TORCH_CHECK(index.size(0) == inputs.size(0) && index.size(1) == inputs.size(1) / 2 &&
              index.size(2) == inputs.size(2) / 2 && index.size(3) == inputs.size(3),
              "patch_conv_pool: index ", index.sizes(), " does not match inputs ", inputs.sizes());
}

at::Tensor patch_conv_pool_weight_grad(const at::Tensor& grad_, const at::Tensor& index, const at::Tensor& inputs_) {
  const at::Tensor inputs = inputs_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  check_index(index, inputs);
  TORCH_CHECK(grad.sizes() == index.sizes(), "patch_conv_pool: grad ", grad.sizes(), " vs index ", index.sizes());
  TORCH_CHECK(grad.scalar_type() == inputs.scalar_type(), "patch_conv_pool: grad and inputs dtypes differ");
  const int64_t n = inputs.size(0), h = inputs.size(1), w = inputs.size(2), tasks = inputs.size(3);
  const int64_t depth = inputs.size(4), channels = grad.size(4);
  at::Tensor grad_weight = at::empty({tasks, channels, depth}, inputs.options());
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "patch_conv_pool_weight_grad", [&] {
    const int64_t block = kBlock<scalar_t>;
    weight_grad_kernel<scalar_t>(grad.data_ptr<scalar_t>(), index.data_ptr<uint8_t>(), inputs.data_ptr<scalar_t>(),
                                 grad_weight.data_ptr<scalar_t>(), n, h, w, tasks, channels,
                                 (channels + block - 1) / block * block, depth);
  });
  return grad_weight;
}

at::Tensor patch_conv_pool_gather(const at::Tensor& weight, const at::Tensor& index, const at::Tensor& inputs_) {
  check_inputs(inputs_, weight);
  const at::Tensor inputs = inputs_.contiguous();
  check_index(index, inputs);
  const int64_t n = inputs.size(0), h = inputs.size(1), w = inputs.size(2), tasks = inputs.size(3);
  const int64_t depth = inputs.size(4), channels = weight.size(1);
  TORCH_CHECK(index.size(4) == channels, "patch_conv_pool: index ", index.sizes(), " vs weight ", weight.sizes());
  at::Tensor out = at::empty(index.sizes(), inputs.options());
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "patch_conv_pool_gather", [&] {
    const at::Tensor w_tdc = padded_weight(weight, kBlock<scalar_t>);
    // index is only read here
    window_kernel<scalar_t, true>(inputs.data_ptr<scalar_t>(), w_tdc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                  const_cast<uint8_t*>(index.data_ptr<uint8_t>()), n, h, w, tasks, channels,
                                  w_tdc.size(2), depth);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(metalab_native, m) {
  m.def("patch_conv_pool(Tensor inputs, Tensor weight) -> (Tensor, Tensor)");
  m.def("patch_conv_pool_weight_grad(Tensor grad, Tensor index, Tensor inputs) -> Tensor");
  m.def("patch_conv_pool_gather(Tensor weight, Tensor index, Tensor inputs) -> Tensor");
}

TORCH_LIBRARY_IMPL(metalab_native, CPU, m) {
  m.impl("patch_conv_pool", &patch_conv_pool);
  m.impl("patch_conv_pool_weight_grad", &patch_conv_pool_weight_grad);
  m.impl("patch_conv_pool_gather", &patch_conv_pool_gather);
}
