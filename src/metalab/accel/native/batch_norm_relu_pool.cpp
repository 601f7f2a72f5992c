// Training-mode BatchNorm (batch statistics), ReLU and a 2x2 max-pool (stride 2) over a channels-last map,
// in two passes forward and two backward (see metalab/accel/batch_norm_relu_pool.py for the maths).
//
// y      [N, H, W, C] (a channels-last [N, C, H, W] tensor's memory), float or double
// out    [N, H/2, W/2, C] = max over the 2x2 window of relu(gamma * (y - mean) * invstd + beta)
// index  [N, H/2, W/2, C] uint8: window position (0..3, row-major) of the maximum, 4 where it is <= 0
// mean, var [C]: the batch mean and biased variance of y over N, H, W (double accumulation)
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "vec.h"

namespace {

constexpr uint8_t kInactive = 4;

void check_map(const at::Tensor& y, const char* what) {
  TORCH_CHECK(y.dim() == 4 && y.is_contiguous(), "batch_norm_relu_pool: ", what,
              " must be a contiguous [N, H, W, C] tensor, got ", y.sizes());
  TORCH_CHECK(y.device().is_cpu(), "batch_norm_relu_pool: CPU tensors only");
}

using metalab_native::Vec;

// Every kernel walks the channels of a position in vectors of Vec<scalar_t>::lanes; the last, partial
// vector of a row (C not a multiple of the lanes) goes through the *_partial loads and stores.

template <typename scalar_t>
void moments(const scalar_t* y, int64_t rows, int64_t w, int64_t c, double* mean, double* var) {
  using V = Vec<scalar_t>;
  constexpr int64_t L = V::lanes;
  // per thread: [2, C] double sums of y and y^2; each image row is summed in scalar_t first
  const int threads = at::get_num_threads();
  std::vector<double> partial(static_cast<size_t>(threads) * 2 * c, 0.0);
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    double* sums = partial.data() + static_cast<size_t>(at::get_thread_num()) * 2 * c;
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t* p = y + row * w * c;
      for (int64_t k = 0; k < c; k += L) {
        const int64_t count = std::min<int64_t>(L, c - k);
        typename V::type total = V::broadcast(0), squares = total;
        for (int64_t x = 0; x < w; ++x) {
          const typename V::type v = V::load_n(p + x * c + k, count);
          total += v;
          squares += v * v;
        }
        for (int64_t l = 0; l < count; ++l) { sums[k + l] += total[l]; sums[c + k + l] += squares[l]; }
      }
    }
  });
  const double count = static_cast<double>(rows * w);
  for (int64_t k = 0; k < c; ++k) {
    double total = 0, squares = 0;
    for (int thread = 0; thread < threads; ++thread) {
      total += partial[static_cast<size_t>(thread) * 2 * c + k];
      squares += partial[static_cast<size_t>(thread) * 2 * c + c + k];
    }
    mean[k] = total / count;
    var[k] = std::max(squares / count - mean[k] * mean[k], 0.0);
  }
}

template <typename scalar_t>
void forward_kernel(const scalar_t* y, const scalar_t* scale, const scalar_t* shift, scalar_t* out,
                    uint8_t* index, int64_t n, int64_t h, int64_t w, int64_t c) {
  using V = Vec<scalar_t>;
  using vec = typename V::type;
  constexpr int64_t L = V::lanes;
  const int64_t ho = h / 2, wo = w / 2;
  at::parallel_for(0, n * ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t image = row / ho, i = row % ho;
      for (int64_t j = 0; j < wo; ++j) {
        const scalar_t* window[4];
        for (int a = 0; a < 4; ++a) window[a] = y + ((image * h + 2 * i + a / 2) * w + 2 * j + a % 2) * c;
        scalar_t* o = out + ((image * ho + i) * wo + j) * c;
        uint8_t* where = index + ((image * ho + i) * wo + j) * c;
        for (int64_t k = 0; k < c; k += L) {
          const int64_t count = std::min<int64_t>(L, c - k);
          const vec a_k = V::load_n(scale + k, count);
          const vec b_k = V::load_n(shift + k, count);
          vec best = V::load_n(window[0] + k, count) * a_k + b_k;
          typename V::ints at = V::splat(0);
          for (int a = 1; a < 4; ++a) {
            const vec z = V::load_n(window[a] + k, count) * a_k + b_k;
            const auto greater = z > best;  // strict: the first maximum wins, as in max_pool2d
            best = greater ? z : best;
            at = greater ? V::splat(a) : at;
          }
          const vec zero = V::broadcast(0);
          const auto active = best > zero;
          const vec value = active ? best : zero;
          const typename V::ints position = active ? at : V::splat(kInactive);
          V::store_n(o + k, value, count);
          V::store_bytes_n(where + k, position, count);
        }
      }
    }
  });
}

// sums over the active maxima: [0, C) of grad, [C, 2C) of grad * xhat at the maximum
template <typename scalar_t>
void backward_sums(const scalar_t* grad, const uint8_t* index, const scalar_t* y, const double* mean,
                   const double* invstd, int64_t n, int64_t h, int64_t w, int64_t c, double* sums_out) {
  using V = Vec<scalar_t>;
  using vec = typename V::type;
  constexpr int64_t L = V::lanes;
  const int64_t ho = h / 2, wo = w / 2;
  const int threads = at::get_num_threads();
  std::vector<double> partial(static_cast<size_t>(threads) * 2 * c, 0.0);
  std::vector<scalar_t> mean_s(mean, mean + c);
  at::parallel_for(0, n * ho, 1, [&](int64_t begin, int64_t end) {
    double* sums = partial.data() + static_cast<size_t>(at::get_thread_num()) * 2 * c;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t image = row / ho, i = row % ho;
      for (int64_t k = 0; k < c; k += L) {
        const int64_t count = std::min<int64_t>(L, c - k);
        const vec mean_k = V::load_n(mean_s.data() + k, count);
        vec grad_sum = V::broadcast(0), centred_sum = grad_sum;
        for (int64_t j = 0; j < wo; ++j) {
          const int64_t offset = ((image * ho + i) * wo + j) * c + k;
          const typename V::ints at = V::load_bytes_n(index + offset, count, kInactive);
          const vec g = V::load_n(grad + offset, count);
          vec value = V::broadcast(0);
          for (int a = 0; a < 4; ++a) {
            const scalar_t* p = y + ((image * h + 2 * i + a / 2) * w + 2 * j + a % 2) * c + k;
            value = at == V::splat(a) ? V::load_n(p, count) : value;
          }
          const vec active_grad = at != V::splat(kInactive) ? g : V::broadcast(0);
          grad_sum += active_grad;
          centred_sum += active_grad * (value - mean_k);
        }
        for (int64_t l = 0; l < count; ++l) { sums[k + l] += grad_sum[l]; sums[c + k + l] += centred_sum[l]; }
      }
    }
  });
  for (int64_t k = 0; k < 2 * c; ++k) {
    double total = 0;
    for (int thread = 0; thread < threads; ++thread) total += partial[static_cast<size_t>(thread) * 2 * c + k];
    sums_out[k] = total;
  }
  for (int64_t k = 0; k < c; ++k) sums_out[c + k] *= invstd[k];  // sum of grad * xhat
}

// dy = gamma * invstd * (g_bn - mean(g_bn) - xhat * mean(g_bn * xhat)), g_bn = grad at the maxima, else 0,
// computed as dy = a * g_bn + b * y + c_ with per-channel a, b, c_.
template <typename scalar_t>
void input_grad_kernel(const scalar_t* grad, const uint8_t* index, const scalar_t* y, const scalar_t* a_coef,
                       const scalar_t* b_coef, const scalar_t* c_coef, scalar_t* dy, int64_t n, int64_t h,
                       int64_t w, int64_t c) {
  using V = Vec<scalar_t>;
  using vec = typename V::type;
  constexpr int64_t L = V::lanes;
  const int64_t ho = h / 2, wo = w / 2;
  at::parallel_for(0, n * h, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t image = row / h, yy = row % h;
      const bool pooled_row = yy < 2 * ho;
      const int64_t i = yy / 2;
      for (int64_t x = 0; x < w; ++x) {
        const scalar_t* p = y + (row * w + x) * c;
        scalar_t* d = dy + (row * w + x) * c;
        const bool pooled = pooled_row && x < 2 * wo;
        const int64_t offset = ((image * ho + i) * wo + x / 2) * c;
        const int position = static_cast<int>((yy % 2) * 2 + x % 2);
        for (int64_t k = 0; k < c; k += L) {
          const int64_t count = std::min<int64_t>(L, c - k);
          const vec a_k = V::load_n(a_coef + k, count);
          const vec b_k = V::load_n(b_coef + k, count);
          const vec c_k = V::load_n(c_coef + k, count);
          vec result = b_k * V::load_n(p + k, count) + c_k;
          if (pooled) {
            const typename V::ints at = V::load_bytes_n(index + offset + k, count, kInactive);
            const vec g = V::load_n(grad + offset + k, count);
            result += at == V::splat(position) ? a_k * g : V::broadcast(0);
          }
          V::store_n(d + k, result, count);
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_relu_pool(
    const at::Tensor& y, const at::Tensor& gamma, const at::Tensor& beta, double eps) {
  check_map(y, "y");
  const int64_t n = y.size(0), h = y.size(1), w = y.size(2), c = y.size(3);
  TORCH_CHECK(h >= 2 && w >= 2, "batch_norm_relu_pool: the map must be at least 2x2, got ", h, "x", w);
  TORCH_CHECK(gamma.numel() == c && beta.numel() == c, "batch_norm_relu_pool: gamma and beta need ", c, " values");
  at::Tensor mean = at::empty({c}, y.options().dtype(at::kDouble));
  at::Tensor var = at::empty({c}, y.options().dtype(at::kDouble));
  at::Tensor out = at::empty({n, h / 2, w / 2, c}, y.options());
  at::Tensor index = at::empty({n, h / 2, w / 2, c}, y.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "batch_norm_relu_pool", [&] {
    moments<scalar_t>(y.data_ptr<scalar_t>(), n * h, w, c, mean.data_ptr<double>(), var.data_ptr<double>());
    const at::Tensor invstd = (var + eps).rsqrt();
    const at::Tensor scale = (gamma.to(at::kDouble).reshape({c}) * invstd);
    const at::Tensor shift = beta.to(at::kDouble).reshape({c}) - mean * scale;
    const at::Tensor scale_s = scale.to(y.scalar_type()).contiguous(), shift_s = shift.to(y.scalar_type()).contiguous();
    forward_kernel<scalar_t>(y.data_ptr<scalar_t>(), scale_s.data_ptr<scalar_t>(), shift_s.data_ptr<scalar_t>(),
                             out.data_ptr<scalar_t>(), index.data_ptr<uint8_t>(), n, h, w, c);
  });
  return {out, index, mean, var};
}

// returns (dy [N, H, W, C], dgamma [C], dbeta [C])
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_relu_pool_backward(
    const at::Tensor& grad_, const at::Tensor& index, const at::Tensor& y, const at::Tensor& mean,
    const at::Tensor& var, const at::Tensor& gamma, double eps) {
  check_map(y, "y");
  const at::Tensor grad = grad_.contiguous();
  const int64_t n = y.size(0), h = y.size(1), w = y.size(2), c = y.size(3);
  TORCH_CHECK(grad.sizes() == index.sizes() && index.is_contiguous() && index.scalar_type() == at::kByte &&
              index.dim() == 4 && index.size(0) == n && index.size(1) == h / 2 && index.size(2) == w / 2 &&
              index.size(3) == c, "batch_norm_relu_pool: grad ", grad.sizes(), " / index ", index.sizes(),
              " do not match y ", y.sizes());
  TORCH_CHECK(grad.scalar_type() == y.scalar_type(), "batch_norm_relu_pool: grad and y dtypes differ");
  const at::Tensor invstd = (var + eps).rsqrt().contiguous();
  at::Tensor sums = at::empty({2 * c}, y.options().dtype(at::kDouble));
  at::Tensor dy = at::empty_like(y);
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "batch_norm_relu_pool_backward", [&] {
    backward_sums<scalar_t>(grad.data_ptr<scalar_t>(), index.data_ptr<uint8_t>(), y.data_ptr<scalar_t>(),
                            mean.data_ptr<double>(), invstd.data_ptr<double>(), n, h, w, c, sums.data_ptr<double>());
    const double count = static_cast<double>(n * h * w);
    const at::Tensor grad_sum = sums.narrow(0, 0, c), grad_xhat = sums.narrow(0, c, c);
    const at::Tensor a = gamma.to(at::kDouble).reshape({c}) * invstd;
    const at::Tensor b = -a * invstd * grad_xhat / count;
    const at::Tensor cc = -a * grad_sum / count - b * mean;
    const at::Tensor a_s = a.to(y.scalar_type()).contiguous(), b_s = b.to(y.scalar_type()).contiguous();
    const at::Tensor c_s = cc.to(y.scalar_type()).contiguous();
    input_grad_kernel<scalar_t>(grad.data_ptr<scalar_t>(), index.data_ptr<uint8_t>(), y.data_ptr<scalar_t>(),
                                a_s.data_ptr<scalar_t>(), b_s.data_ptr<scalar_t>(), c_s.data_ptr<scalar_t>(),
                                dy.data_ptr<scalar_t>(), n, h, w, c);
  });
  const at::Tensor dgamma = sums.narrow(0, c, c).to(gamma.scalar_type());
  const at::Tensor dbeta = sums.narrow(0, 0, c).to(gamma.scalar_type());
  return {dy, dgamma, dbeta};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(metalab_native, m) {
  m.def("batch_norm_relu_pool(Tensor y, Tensor gamma, Tensor beta, float eps) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("batch_norm_relu_pool_backward(Tensor grad, Tensor index, Tensor y, Tensor mean, Tensor var, Tensor gamma, "
        "float eps) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(metalab_native, CPU, m) {
  m.impl("batch_norm_relu_pool", &batch_norm_relu_pool);
  m.impl("batch_norm_relu_pool_backward", &batch_norm_relu_pool_backward);
}
