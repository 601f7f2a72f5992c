// A stride-1 convolution by NNPACK (linked into libtorch_cpu), run on PyTorch's own OpenMP threads.
//
// torch._nnpack_spatial_convolution runs NNPACK on a separate pthreadpool. Between oneDNN calls that
// costs ~6-7 ms per switch on a 2-core machine: libgomp's idle workers spin for milliseconds after every
// parallel region and take the core from NNPACK's workers (and the reverse). Here each OpenMP thread
// instead runs NNPACK on its own slice of the batch with no thread pool (NNPACK then computes on the
// calling thread), so only one set of threads exists.
//
// input  [N, C, H, W] float32, contiguous (NCHW)
// weight [O, C, kH, kW] float32, contiguous; kH, kW <= 16 (NNPACK's limit)
// output [N, O, H + 2 padding - kH + 1, W + 2 padding - kW + 1], NCHW
// The algorithm is NNPACK's choice: Winograd F(6x6, 3x3) for 3x3 kernels, FFT otherwise.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <nnpack.h>

#include <cstdlib>
#include <mutex>

namespace {

bool initialised() {
  static std::once_flag once;
  static nnp_status status = nnp_status_uninitialized;
  std::call_once(once, [] { status = nnp_initialize(); });
  return status == nnp_status_success;
}

// One workspace per thread, kept between calls: allocating it per call (NNPACK's default) costs more than the
// convolution, in page faults.
void* workspace(size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffer;
  if (buffer.size < bytes) {
    std::free(buffer.data);
    buffer.size = (bytes + 63) / 64 * 64;
    buffer.data = std::aligned_alloc(64, buffer.size);
    TORCH_CHECK(buffer.data != nullptr, "nnpack_conv2d: out of memory for a ", bytes, "-byte workspace");
  }
  return buffer.data;
}

// out [batch, outputs, ...] = input [batch, channels, height, width] * kernel [outputs, channels, kh, kw] on the
// calling thread, with this thread's workspace.
void convolve(const float* input, const float* kernel, const float* zeros, float* out, int64_t batch,
              int64_t channels, int64_t outputs, int64_t height, int64_t width, int64_t kh, int64_t kw,
              int64_t padding) {
  const nnp_size input_size{static_cast<size_t>(width), static_cast<size_t>(height)};
  const nnp_size kernel_size{static_cast<size_t>(kw), static_cast<size_t>(kh)};
  const auto pad = static_cast<size_t>(padding);
  const nnp_padding input_padding{pad, pad, pad, pad};  // top, right, bottom, left
  auto run = [&](void* buffer, size_t* bytes) {
    const nnp_status status = nnp_convolution_output(
        nnp_convolution_algorithm_auto, batch, channels, outputs, input_size, input_padding, kernel_size, input,
        kernel, zeros, out, buffer, bytes, nnp_activation_identity, nullptr, nullptr, nullptr);
    TORCH_CHECK(status == nnp_status_success, "nnpack_conv2d: NNPACK failed with status ", static_cast<int>(status));
  };
  size_t bytes = 0;
  run(nullptr, &bytes);  // asks for the workspace size only
  run(workspace(bytes), &bytes);
}

at::Tensor nnpack_conv2d(const at::Tensor& input, const at::Tensor& weight, int64_t padding) {
  TORCH_CHECK(initialised(), "nnpack_conv2d: NNPACK does not initialise on this CPU");
  TORCH_CHECK(input.dim() == 4 && weight.dim() == 4 && input.size(1) == weight.size(1),
              "nnpack_conv2d: expected input [N, C, H, W] and weight [O, C, kH, kW], got ", input.sizes(), " and ",
              weight.sizes());
  TORCH_CHECK(input.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat && input.device().is_cpu(),
              "nnpack_conv2d: float32 CPU tensors only");
  TORCH_CHECK(input.is_contiguous() && weight.is_contiguous(), "nnpack_conv2d: NCHW-contiguous tensors only");
  TORCH_CHECK(weight.size(2) <= 16 && weight.size(3) <= 16, "nnpack_conv2d: kernels up to 16x16, got ",
              weight.sizes());
  const int64_t n = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t outputs = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  const int64_t out_h = height + 2 * padding - kh + 1, out_w = width + 2 * padding - kw + 1;
  TORCH_CHECK(out_h > 0 && out_w > 0 && padding >= 0 && padding < kh && padding < kw,
              "nnpack_conv2d: padding ", padding, " does not fit kernel ", kh, "x", kw, " on a ", height, "x", width,
              " map");
  at::Tensor out = at::empty({n, outputs, out_h, out_w}, input.options());
  const at::Tensor zeros = at::zeros({outputs}, input.options());
  const float* in = input.data_ptr<float>();
  float* result = out.data_ptr<float>();
  const int64_t in_image = channels * height * width, out_image = outputs * out_h * out_w;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    convolve(in + begin * in_image, weight.data_ptr<float>(), zeros.data_ptr<float>(), result + begin * out_image,
             end - begin, channels, outputs, height, width, kh, kw, padding);
  });
  return out;
}

// The weight gradient of out = input * weight (stride 1, zero padding), [O, C, kH, kW], from input [N, C, H, W]
// and grad [N, O, Ho, Wo] (any strides): the convolution of pad(input)^T [C, N, H+2p, W+2p] with grad^T
// [O, N, Ho, Wo] as its kernel. Each thread takes a slice of the images (the sum's index), so neither
// operand's transform is repeated across threads; the slices' partial gradients are added at the end.
at::Tensor nnpack_conv2d_weight_grad(const at::Tensor& input, const at::Tensor& grad, int64_t padding) {
  TORCH_CHECK(initialised(), "nnpack_conv2d_weight_grad: NNPACK does not initialise on this CPU");
  TORCH_CHECK(input.dim() == 4 && grad.dim() == 4 && input.size(0) == grad.size(0),
              "nnpack_conv2d_weight_grad: expected input [N, C, H, W] and grad [N, O, Ho, Wo], got ", input.sizes(),
              " and ", grad.sizes());
  TORCH_CHECK(input.scalar_type() == at::kFloat && grad.scalar_type() == at::kFloat && input.device().is_cpu() &&
                  grad.device().is_cpu(),
              "nnpack_conv2d_weight_grad: float32 CPU tensors only");
  const int64_t n = input.size(0), channels = input.size(1), outputs = grad.size(1);
  const int64_t padded_h = input.size(2) + 2 * padding, padded_w = input.size(3) + 2 * padding;
  const int64_t out_h = grad.size(2), out_w = grad.size(3);
  const int64_t kh = padded_h - out_h + 1, kw = padded_w - out_w + 1;
  TORCH_CHECK(padding >= 0 && kh > 0 && kw > 0 && out_h <= 16 && out_w <= 16,
              "nnpack_conv2d_weight_grad: maps up to 16x16 (the gradient is NNPACK's kernel), got ", grad.sizes());
  const int threads = at::get_num_threads();
  at::Tensor partial = at::zeros({threads, channels, outputs, kh, kw}, input.options());
  const at::Tensor zeros = at::zeros({outputs}, input.options());
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    const int64_t images = end - begin;
    // copies inside a parallel region run on this thread
    at::Tensor padded = at::zeros({channels, images, padded_h, padded_w}, input.options());
    padded.narrow(2, padding, input.size(2)).narrow(3, padding, input.size(3))
        .copy_(input.narrow(0, begin, images).transpose(0, 1));
    const at::Tensor kernel = grad.narrow(0, begin, images).transpose(0, 1).contiguous();
    convolve(padded.data_ptr<float>(), kernel.data_ptr<float>(), zeros.data_ptr<float>(),
             partial[at::get_thread_num()].data_ptr<float>(), channels, images, outputs, padded_h, padded_w, out_h,
             out_w, 0);
  });
  return partial.sum(0).transpose(0, 1).contiguous();
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(metalab_native, m) {
  m.def("nnpack_conv2d(Tensor input, Tensor weight, int padding) -> Tensor");
  m.def("nnpack_conv2d_weight_grad(Tensor input, Tensor grad, int padding) -> Tensor");
}

TORCH_LIBRARY_IMPL(metalab_native, CPU, m) {
  m.impl("nnpack_conv2d", &nnpack_conv2d);
  m.impl("nnpack_conv2d_weight_grad", &nnpack_conv2d_weight_grad);
}
