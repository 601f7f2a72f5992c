// BatchNorm (batch statistics) + ReLU + 2x2 max-pool, channel by channel over strided [N, C, H, W] maps:
// the forward and backward for the default (NCHW) layout, and the double backward for both layouts (see
// metalab/accel/batch_norm_relu_pool.py for the maths). Each thread owns whole channels, so the per-channel
// sums need no reduction across threads; the loops are scalar (the compiler vectorises what it can): at
// the sizes they serve (support sets of a second-order inner loop) they replace some fifteen PyTorch calls.
//
// x      [N, C, H, W] with any strides (NCHW or channels-last memory), float or double
// out    [N, C, H/2, W/2] = max over the 2x2 window of relu(gamma * (x - mean) * invstd + beta), x's layout
// index  [N, C, H/2, W/2] uint8 (any strides): window position (0..3, row-major) of the maximum, 4 where
//        it is <= 0
// mean, var [C] double: the batch mean and biased variance over N, H, W
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>

namespace {

constexpr uint8_t kInactive = 4;

// element strides of a 4-d tensor, (n, c, h, w)
struct Strides {
  int64_t n, c, h, w;
  explicit Strides(const at::Tensor& t) : n(t.stride(0)), c(t.stride(1)), h(t.stride(2)), w(t.stride(3)) {}
  int64_t at(int64_t image, int64_t channel, int64_t row, int64_t col) const {
    return image * n + channel * c + row * h + col * w;
  }
};

void check_map(const at::Tensor& x, const char* what) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu(), "batch_norm_relu_pool: ", what,
              " must be a 4-d CPU tensor, got ", x.sizes());
  TORCH_CHECK(x.size(2) >= 2 && x.size(3) >= 2, "batch_norm_relu_pool: the map must be at least 2x2, got ",
              x.size(2), "x", x.size(3));
}

void check_pooled(const at::Tensor& pooled, const at::Tensor& x, const char* what) {
  TORCH_CHECK(pooled.dim() == 4 && pooled.size(0) == x.size(0) && pooled.size(1) == x.size(1) &&
              pooled.size(2) == x.size(2) / 2 && pooled.size(3) == x.size(3) / 2,
              "batch_norm_relu_pool: ", what, " ", pooled.sizes(), " does not match the map ", x.sizes());
}

// out, index: the pooled maps of channel c
template <typename scalar_t>
void forward_channel(const scalar_t* x, const Strides& sx, scalar_t* out, uint8_t* index, const Strides& so,
                     int64_t channel, int64_t n, int64_t h, int64_t w, scalar_t scale, scalar_t shift) {
  const int64_t ho = h / 2, wo = w / 2;
  for (int64_t image = 0; image < n; ++image) {
    for (int64_t i = 0; i < ho; ++i) {
      for (int64_t j = 0; j < wo; ++j) {
        scalar_t best = x[sx.at(image, channel, 2 * i, 2 * j)] * scale + shift;
        uint8_t at = 0;
        for (int a = 1; a < 4; ++a) {
          const scalar_t z = x[sx.at(image, channel, 2 * i + a / 2, 2 * j + a % 2)] * scale + shift;
          if (z > best) { best = z; at = static_cast<uint8_t>(a); }  // strict: the first maximum wins
        }
        const int64_t o = so.at(image, channel, i, j);
        const bool active = best > scalar_t(0);
        out[o] = active ? best : scalar_t(0);
        index[o] = active ? at : kInactive;
      }
    }
  }
}

// the value of x at window (i, j)'s maximum
template <typename scalar_t>
scalar_t at_maximum(const scalar_t* x, const Strides& sx, int64_t image, int64_t channel, int64_t i, int64_t j,
                    uint8_t at) {
  return x[sx.at(image, channel, 2 * i + at / 2, 2 * j + at % 2)];
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_planes(
    const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, double eps) {
  check_map(x, "x");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  TORCH_CHECK(gamma.numel() == c && beta.numel() == c, "batch_norm_relu_pool: gamma and beta need ", c, " values");
  at::Tensor mean = at::empty({c}, x.options().dtype(at::kDouble));
  at::Tensor var = at::empty({c}, x.options().dtype(at::kDouble));
  at::Tensor out = at::empty({n, c, h / 2, w / 2}, x.options());
  at::Tensor index = at::empty({n, c, h / 2, w / 2}, x.options().dtype(at::kByte));
  const at::Tensor gamma_d = gamma.to(at::kDouble).contiguous(), beta_d = beta.to(at::kDouble).contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_relu_pool_planes", [&] {
    const scalar_t* px = x.data_ptr<scalar_t>();
    const Strides sx(x), so(out);
    at::parallel_for(0, c, 1, [&](int64_t begin, int64_t end) {
      for (int64_t channel = begin; channel < end; ++channel) {
        double total = 0, squares = 0;
        for (int64_t image = 0; image < n; ++image) {
          for (int64_t row = 0; row < h; ++row) {
            scalar_t row_total = 0, row_squares = 0;
            for (int64_t col = 0; col < w; ++col) {
              const scalar_t v = px[sx.at(image, channel, row, col)];
              row_total += v;
              row_squares += v * v;
            }
            total += row_total;
            squares += row_squares;
          }
        }
        const double count = static_cast<double>(n * h * w);
        const double m = total / count, v = std::max(squares / count - m * m, 0.0);
        mean.data_ptr<double>()[channel] = m;
        var.data_ptr<double>()[channel] = v;
        const double scale = gamma_d.data_ptr<double>()[channel] / std::sqrt(v + eps);
        const double shift = beta_d.data_ptr<double>()[channel] - m * scale;
        forward_channel<scalar_t>(px, sx, out.data_ptr<scalar_t>(), index.data_ptr<uint8_t>(), so, channel, n, h, w,
                                  static_cast<scalar_t>(scale), static_cast<scalar_t>(shift));
      }
    });
  });
  return {out, index, mean, var};
}

// (dx [N, C, H, W] in x's layout, dgamma [C], dbeta [C]):
//   S1 = sum of grad over the active maxima, S2 = sum of grad * xhat there,
//   dx = gamma invstd (g_bn - S1 / M - xhat S2 / M), g_bn = grad at the active maxima, else 0
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_planes(
    const at::Tensor& grad, const at::Tensor& index, const at::Tensor& x, const at::Tensor& mean,
    const at::Tensor& var, const at::Tensor& gamma, double eps) {
  check_map(x, "x");
  check_pooled(grad, x, "grad");
  check_pooled(index, x, "index");
  TORCH_CHECK(index.scalar_type() == at::kByte, "batch_norm_relu_pool: index must be uint8");
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "batch_norm_relu_pool: grad and x dtypes differ");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), ho = h / 2, wo = w / 2;
  at::Tensor dx = at::empty_like(x);
  at::Tensor dgamma = at::empty({c}, x.options().dtype(at::kDouble));
  at::Tensor dbeta = at::empty({c}, x.options().dtype(at::kDouble));
  const at::Tensor mean_d = mean.contiguous(), invstd = (var + eps).rsqrt().contiguous();
  const at::Tensor gamma_d = gamma.to(at::kDouble).contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_relu_pool_backward_planes", [&] {
    const scalar_t* px = x.data_ptr<scalar_t>();
    const scalar_t* pg = grad.data_ptr<scalar_t>();
    const uint8_t* pi = index.data_ptr<uint8_t>();
    scalar_t* pd = dx.data_ptr<scalar_t>();
    const Strides sx(x), so(grad), si(index), sd(dx);
    at::parallel_for(0, c, 1, [&](int64_t begin, int64_t end) {
      for (int64_t channel = begin; channel < end; ++channel) {
        const double m = mean_d.data_ptr<double>()[channel], r = invstd.data_ptr<double>()[channel];
        double grad_sum = 0, centred_sum = 0;
        for (int64_t image = 0; image < n; ++image) {
          for (int64_t i = 0; i < ho; ++i) {
            for (int64_t j = 0; j < wo; ++j) {
              const uint8_t at = pi[si.at(image, channel, i, j)];
              if (at == kInactive) continue;
              const double g = pg[so.at(image, channel, i, j)];
              grad_sum += g;
              centred_sum += g * (at_maximum(px, sx, image, channel, i, j, at) - m);
            }
          }
        }
        const double count = static_cast<double>(n * h * w), grad_xhat = centred_sum * r;
        dgamma.data_ptr<double>()[channel] = grad_xhat;
        dbeta.data_ptr<double>()[channel] = grad_sum;
        // dx = a g_bn + b x + c_
        const double a = gamma_d.data_ptr<double>()[channel] * r;
        const double b = -a * r * grad_xhat / count;
        const double c_ = -a * grad_sum / count - b * m;
        const scalar_t as = static_cast<scalar_t>(a), bs = static_cast<scalar_t>(b), cs = static_cast<scalar_t>(c_);
        for (int64_t image = 0; image < n; ++image) {
          for (int64_t row = 0; row < h; ++row) {
            for (int64_t col = 0; col < w; ++col) {
              pd[sd.at(image, channel, row, col)] = bs * px[sx.at(image, channel, row, col)] + cs;
            }
          }
          for (int64_t i = 0; i < ho; ++i) {
            for (int64_t j = 0; j < wo; ++j) {
              const uint8_t at = pi[si.at(image, channel, i, j)];
              if (at != kInactive) {
                pd[sd.at(image, channel, 2 * i + at / 2, 2 * j + at % 2)] += as * pg[so.at(image, channel, i, j)];
              }
            }
          }
        }
      }
    });
  });
  return {dx, dgamma.to(gamma.scalar_type()), dbeta.to(gamma.scalar_type())};
}

// The backward's own backward. With a = grad_dx (the map), b = grad_dgamma, c = grad_dbeta (per channel),
// r = invstd, xhat = (x - mean) r, g = the incoming grad at the active maxima (0 elsewhere), M = N H W and
// the per-channel sums Sg = sum g (= dbeta), G1 = sum g xhat (= dgamma), Sa = sum a, A1 = sum a xhat,
// Sag = sum a g:
//   grad_grad (at each active maximum) = gamma r (a - Sa/M - xhat A1/M) + b xhat + c
//   grad_gamma = r (Sag - Sa Sg/M - A1 G1/M)
//   grad_x = P g + Q a + R x + S, where, with d_j = -gamma r/M (g_j A1 + a_j G1) + b g_j (the derivative
//   in xhat) and dT/dr = gamma grad_gamma / r (the derivative in r):
//     K = (sum d xhat)/M + r dT/dr / M,  P = r (b - gamma r A1/M),  Q = -gamma r^2 G1/M,  R = -r^2 K,
//     S = -r mean(d) + r^2 mean K
// Returns (grad_grad [N, C, H/2, W/2] in grad's layout, grad_x [N, C, H, W] in x's layout, grad_gamma [C]).
std::tuple<at::Tensor, at::Tensor, at::Tensor> double_backward_planes(
    const at::Tensor& grad_dx, const at::Tensor& grad_dgamma, const at::Tensor& grad_dbeta, const at::Tensor& grad,
    const at::Tensor& index, const at::Tensor& x, const at::Tensor& mean, const at::Tensor& var,
    const at::Tensor& gamma, const at::Tensor& dgamma, const at::Tensor& dbeta, double eps) {
  check_map(x, "x");
  check_pooled(grad, x, "grad");
  check_pooled(index, x, "index");
  TORCH_CHECK(index.scalar_type() == at::kByte, "batch_norm_relu_pool: index must be uint8");
  TORCH_CHECK(grad_dx.sizes() == x.sizes() && grad_dx.scalar_type() == x.scalar_type() &&
              grad.scalar_type() == x.scalar_type(), "batch_norm_relu_pool: grad_dx ", grad_dx.sizes(),
              " does not match x ", x.sizes());
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), ho = h / 2, wo = w / 2;
  at::Tensor grad_grad = at::empty_like(grad);
  at::Tensor grad_x = at::empty_like(x);
  at::Tensor grad_gamma = at::empty({c}, x.options().dtype(at::kDouble));
  const at::Tensor mean_d = mean.contiguous(), invstd = (var + eps).rsqrt().contiguous();
  const at::Tensor gamma_d = gamma.to(at::kDouble).contiguous();
  const at::Tensor b_d = grad_dgamma.to(at::kDouble).contiguous(), c_d = grad_dbeta.to(at::kDouble).contiguous();
  const at::Tensor g1_d = dgamma.to(at::kDouble).contiguous(), sg_d = dbeta.to(at::kDouble).contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batch_norm_relu_pool_double_backward", [&] {
    const scalar_t* px = x.data_ptr<scalar_t>();
    const scalar_t* pa = grad_dx.data_ptr<scalar_t>();
    const scalar_t* pg = grad.data_ptr<scalar_t>();
    const uint8_t* pi = index.data_ptr<uint8_t>();
    scalar_t* pgg = grad_grad.data_ptr<scalar_t>();
    scalar_t* pgx = grad_x.data_ptr<scalar_t>();
    const Strides sx(x), sa(grad_dx), so(grad), si(index), sgg(grad_grad), sgx(grad_x);
    at::parallel_for(0, c, 1, [&](int64_t begin, int64_t end) {
      for (int64_t channel = begin; channel < end; ++channel) {
        const double m = mean_d.data_ptr<double>()[channel], r = invstd.data_ptr<double>()[channel];
        double a_sum = 0, a_centred = 0, ag_sum = 0;
        for (int64_t image = 0; image < n; ++image) {
          for (int64_t row = 0; row < h; ++row) {
            scalar_t row_sum = 0, row_centred = 0;
            const scalar_t ms = static_cast<scalar_t>(m);
            for (int64_t col = 0; col < w; ++col) {
              const scalar_t a = pa[sa.at(image, channel, row, col)];
              row_sum += a;
              row_centred += a * (px[sx.at(image, channel, row, col)] - ms);
            }
            a_sum += row_sum;
            a_centred += row_centred;
          }
          for (int64_t i = 0; i < ho; ++i) {
            for (int64_t j = 0; j < wo; ++j) {
              const uint8_t at = pi[si.at(image, channel, i, j)];
              if (at != kInactive) {
                ag_sum += static_cast<double>(pg[so.at(image, channel, i, j)]) *
                          pa[sa.at(image, channel, 2 * i + at / 2, 2 * j + at % 2)];
              }
            }
          }
        }
        const double count = static_cast<double>(n * h * w);
        const double gm = gamma_d.data_ptr<double>()[channel], b = b_d.data_ptr<double>()[channel];
        const double cc = c_d.data_ptr<double>()[channel];
        const double g1 = g1_d.data_ptr<double>()[channel], sg = sg_d.data_ptr<double>()[channel];
        const double a1 = a_centred * r;
        const double d_gamma = r * (ag_sum - a_sum * sg / count - a1 * g1 / count);
        grad_gamma.data_ptr<double>()[channel] = d_gamma;
        const double dt_dr = gm * (ag_sum - a_sum * sg / count - g1 * a1 / count);
        const double d_mean = (-gm * r * (sg * a1 + a_sum * g1) / count + b * sg) / count;
        const double d_xhat_sum = -2.0 * gm * r * g1 * a1 / count + b * g1;
        const double k = d_xhat_sum / count + r * dt_dr / count;
        const double p = r * (b - gm * r * a1 / count), q = -gm * r * r * g1 / count, rr = -r * r * k;
        const double s = -r * d_mean + r * r * m * k;
        const scalar_t qs = static_cast<scalar_t>(q), rs = static_cast<scalar_t>(rr), ss = static_cast<scalar_t>(s);
        const scalar_t ps = static_cast<scalar_t>(p);
        // grad_grad at an active maximum = u a + v x + w_
        const double u = gm * r, v = r * (b - gm * r * a1 / count), w_ = -gm * r * a_sum / count + cc - m * v;
        const scalar_t us = static_cast<scalar_t>(u), vs = static_cast<scalar_t>(v), ws = static_cast<scalar_t>(w_);
        for (int64_t image = 0; image < n; ++image) {
          for (int64_t row = 0; row < h; ++row) {
            for (int64_t col = 0; col < w; ++col) {
              pgx[sgx.at(image, channel, row, col)] =
                  qs * pa[sa.at(image, channel, row, col)] + rs * px[sx.at(image, channel, row, col)] + ss;
            }
          }
          for (int64_t i = 0; i < ho; ++i) {
            for (int64_t j = 0; j < wo; ++j) {
              const uint8_t at = pi[si.at(image, channel, i, j)];
              if (at == kInactive) {
                pgg[sgg.at(image, channel, i, j)] = 0;
                continue;
              }
              const int64_t row = 2 * i + at / 2, col = 2 * j + at % 2;
              pgx[sgx.at(image, channel, row, col)] += ps * pg[so.at(image, channel, i, j)];
              pgg[sgg.at(image, channel, i, j)] =
                  us * pa[sa.at(image, channel, row, col)] + vs * px[sx.at(image, channel, row, col)] + ws;
            }
          }
        }
      }
    });
  });
  return {grad_grad, grad_x, grad_gamma.to(gamma.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(metalab_native, m) {
  m.def("batch_norm_relu_pool_planes(Tensor x, Tensor gamma, Tensor beta, float eps) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("batch_norm_relu_pool_backward_planes(Tensor grad, Tensor index, Tensor x, Tensor mean, Tensor var, "
        "Tensor gamma, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("batch_norm_relu_pool_double_backward(Tensor grad_dx, Tensor grad_dgamma, Tensor grad_dbeta, Tensor grad, "
        "Tensor index, Tensor x, Tensor mean, Tensor var, Tensor gamma, Tensor dgamma, Tensor dbeta, float eps) "
        "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(metalab_native, CPU, m) {
  m.impl("batch_norm_relu_pool_planes", &forward_planes);
  m.impl("batch_norm_relu_pool_backward_planes", &backward_planes);
  m.impl("batch_norm_relu_pool_double_backward", &double_backward_planes);
}
