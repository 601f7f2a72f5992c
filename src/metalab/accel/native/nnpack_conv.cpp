// A stride-1 convolution by NNPACK (linked into libtorch_cpu), run on PyTorch's own OpenMP threads.
//
// torch._nnpack_spatial_convolution runs NNPACK on a separate pthreadpool. Between oneDNN calls that
// costs ~6-7 ms per switch on a 2-core machine: libgomp's idle workers spin for milliseconds after every
// parallel region and take the core from NNPACK's workers (and the reverse). Here each OpenMP thread
// instead runs NNPACK on its own slice of the batch with no thread pool (NNPACK then computes on the
// calling thread), so only one set of threads exists.
//
// input  [N, C, H, W] float32, NCHW-contiguous or channels-last
// weight [O, C, kH, kW] float32, contiguous; kH, kW <= 16 (NNPACK's limit)
// bias   [O] or None
// output [N, O, H + 2 padding - kH + 1, W + 2 padding - kW + 1], in the input's memory format
// The algorithm is NNPACK's choice (for 3x3 kernels on 14x14 maps its workspace and rounding are FFT 16x16's).
//
// NNPACK computes on NCHW planes. Channels-last maps (Conv-4's query pass) are transposed here, a thread's
// slice of images at a time into scratch memory, with 8x8 register transposes, and results go back in the
// input's layout: PyTorch's layout copies around the op (`x.contiguous()`, back to channels-last, the same
// for the gradients) were ~300 ms of self CPU in a 2.15 s profiled 5-way MAML meta-iteration on a 2-core AVX2
// CPU (benchmarks/speed/RESULTS.md, 2026-12-06).
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <nnpack.h>

#include <cstdlib>
#include <algorithm>
#include <cstring>
#ifdef __AVX2__
#include <immintrin.h>
#endif
#include <mutex>

namespace {

bool initialised() {
  static std::once_flag once;
  static nnp_status status = nnp_status_uninitialized;
  std::call_once(once, [] { status = nnp_initialize(); });
  return status == nnp_status_success;
}

// Scratch memory of a call, cut into one region per thread: kept by the calling thread between calls and grown to the
// largest call, since allocating it per call cost more than the convolution (page faults, or, from the heap
// that the activations come from, fragmentation: a 5-way MAML meta-iteration's peak memory grew by 60 MB).
struct Scratch {
  uint8_t* base;
  int64_t per_thread;
  Scratch(int64_t bytes_per_thread) : per_thread(bytes_per_thread) {
    struct Buffer {
      void* data = nullptr;
      int64_t size = 0;
      ~Buffer() { std::free(data); }
    };
    thread_local Buffer buffer;
    const int64_t bytes = std::max<int64_t>(1, at::get_num_threads()) * bytes_per_thread;
    if (buffer.size < bytes) {
      std::free(buffer.data);
      buffer.size = 0;
      buffer.data = std::aligned_alloc(64, static_cast<size_t>(bytes));
      TORCH_CHECK(buffer.data != nullptr, "nnpack_conv2d: out of memory for ", bytes, " bytes of scratch memory");
      buffer.size = bytes;
    }
    base = static_cast<uint8_t*>(buffer.data);
  }
  // this thread's region
  uint8_t* region() const { return base + at::get_thread_num() * per_thread; }
};

// Images per NNPACK call: a thread's share of the batch, up to this many, since NNPACK's workspace grows with the
// batch (~9 MB at 38 images of 64 x 14 x 14, which 20-way queries would make ~35 MB per thread).
constexpr int64_t kMaxImagesPerCall = 40;

constexpr int64_t aligned(int64_t bytes) { return (bytes + 63) / 64 * 64; }

int64_t divide_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols: a strided matrix transpose, in 8x8
// register blocks where AVX2 is compiled in.
void transpose(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows, int64_t cols) {
  int64_t i = 0;
#ifdef __AVX2__
  for (; i + 8 <= rows; i += 8) {
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8) {
      const float* s = src + i * src_stride + j;
      __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + src_stride), r2 = _mm256_loadu_ps(s + 2 * src_stride),
             r3 = _mm256_loadu_ps(s + 3 * src_stride), r4 = _mm256_loadu_ps(s + 4 * src_stride),
             r5 = _mm256_loadu_ps(s + 5 * src_stride), r6 = _mm256_loadu_ps(s + 6 * src_stride),
             r7 = _mm256_loadu_ps(s + 7 * src_stride);
      __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
             t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
             t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
      __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
             u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
             u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
             u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      float* d = dst + j * dst_stride + i;
      _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
      _mm256_storeu_ps(d + dst_stride, _mm256_permute2f128_ps(u1, u5, 0x20));
      _mm256_storeu_ps(d + 2 * dst_stride, _mm256_permute2f128_ps(u2, u6, 0x20));
      _mm256_storeu_ps(d + 3 * dst_stride, _mm256_permute2f128_ps(u3, u7, 0x20));
      _mm256_storeu_ps(d + 4 * dst_stride, _mm256_permute2f128_ps(u0, u4, 0x31));
      _mm256_storeu_ps(d + 5 * dst_stride, _mm256_permute2f128_ps(u1, u5, 0x31));
      _mm256_storeu_ps(d + 6 * dst_stride, _mm256_permute2f128_ps(u2, u6, 0x31));
      _mm256_storeu_ps(d + 7 * dst_stride, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    for (; j < cols; ++j)
      for (int64_t k = i; k < i + 8; ++k) dst[j * dst_stride + k] = src[k * src_stride + j];
  }
#endif
  for (; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * dst_stride + i] = src[i * src_stride + j];
}

// A 4-d float map in NCHW or channels-last memory: the images [begin, begin + count) as NCHW planes
// [count, C, H, W] (the map's own memory when it is NCHW, else transposed into ``buffer``).
const float* as_planes(const at::Tensor& map, bool channels_last, int64_t begin, int64_t count, float* buffer) {
  const int64_t channels = map.size(1), positions = map.size(2) * map.size(3);
  const float* data = map.data_ptr<float>() + begin * channels * positions;
  if (!channels_last) return data;
  for (int64_t image = 0; image < count; ++image)
    transpose(data + image * positions * channels, channels, buffer + image * channels * positions, positions,
              positions, channels);
  return buffer;
}

bool is_channels_last(const at::Tensor& map, const char* what) {
  if (map.is_contiguous()) return false;
  TORCH_CHECK(map.is_contiguous(at::MemoryFormat::ChannelsLast), what,
              ": expected an NCHW-contiguous or channels-last map, got strides ", map.strides());
  return true;
}

// NNPACK's arguments for out [batch, outputs, ...] = input [batch, channels, height, width] * kernel
// [outputs, channels, kh, kw] + bias (NCHW planes).
struct Convolution {
  int64_t batch, channels, outputs, height, width, kh, kw, padding;

  nnp_status run(const float* input, const float* kernel, const float* bias, float* out, void* workspace,
                 size_t* bytes) const {
    const auto pad = static_cast<size_t>(padding);
    return nnp_convolution_output(
        nnp_convolution_algorithm_auto, batch, channels, outputs,
        nnp_size{static_cast<size_t>(width), static_cast<size_t>(height)}, nnp_padding{pad, pad, pad, pad},
        nnp_size{static_cast<size_t>(kw), static_cast<size_t>(kh)}, input, kernel, bias, out, workspace, bytes,
        nnp_activation_identity, nullptr, nullptr, nullptr);
  }

  // the workspace NNPACK asks for (an upper bound for smaller batches of the same shapes)
  int64_t workspace_bytes() const {
    size_t bytes = 0;
    const nnp_status status = run(nullptr, nullptr, nullptr, nullptr, nullptr, &bytes);
    TORCH_CHECK(status == nnp_status_success, "nnpack_conv2d: NNPACK refused the shapes (status ",
                static_cast<int>(status), ")");
    return aligned(static_cast<int64_t>(bytes));
  }

  // on the calling thread, with ``workspace`` of workspace_bytes() for at least this batch
  void operator()(const float* input, const float* kernel, const float* bias, float* out, void* workspace) const {
    size_t bytes = 0;
    TORCH_CHECK(run(nullptr, nullptr, nullptr, nullptr, nullptr, &bytes) == nnp_status_success,
                "nnpack_conv2d: NNPACK refused the shapes");
    const nnp_status status = run(input, kernel, bias, out, workspace, &bytes);
    TORCH_CHECK(status == nnp_status_success, "nnpack_conv2d: NNPACK failed with status ", static_cast<int>(status));
  }
};

at::Tensor nnpack_conv2d(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                         int64_t padding) {
  TORCH_CHECK(initialised(), "nnpack_conv2d: NNPACK does not initialise on this CPU");
  TORCH_CHECK(input.dim() == 4 && weight.dim() == 4 && input.size(1) == weight.size(1),
              "nnpack_conv2d: expected input [N, C, H, W] and weight [O, C, kH, kW], got ", input.sizes(), " and ",
              weight.sizes());
  TORCH_CHECK(input.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat && input.device().is_cpu(),
              "nnpack_conv2d: float32 CPU tensors only");
  TORCH_CHECK(weight.is_contiguous(), "nnpack_conv2d: contiguous weights only");
  TORCH_CHECK(weight.size(2) <= 16 && weight.size(3) <= 16, "nnpack_conv2d: kernels up to 16x16, got ",
              weight.sizes());
  const bool channels_last = is_channels_last(input, "nnpack_conv2d");
  const int64_t n = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t outputs = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  const int64_t out_h = height + 2 * padding - kh + 1, out_w = width + 2 * padding - kw + 1;
  TORCH_CHECK(out_h > 0 && out_w > 0 && padding >= 0 && padding < kh && padding < kw,
              "nnpack_conv2d: padding ", padding, " does not fit kernel ", kh, "x", kw, " on a ", height, "x", width,
              " map");
  const at::Tensor shift =
      bias.has_value() && bias->defined() ? bias->contiguous() : at::zeros({outputs}, input.options());
  TORCH_CHECK(shift.scalar_type() == at::kFloat && shift.numel() == outputs, "nnpack_conv2d: bias must be float32 [",
              outputs, "], got ", shift.sizes());
  at::Tensor out = at::empty({n, outputs, out_h, out_w},
                             input.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                         : at::MemoryFormat::Contiguous));
  const int64_t in_image = channels * height * width, out_positions = out_h * out_w;
  const int64_t out_image = outputs * out_positions;
  // a thread's slice of images: at most ceil(n / threads)
  const int64_t most = std::min(kMaxImagesPerCall, divide_up(n, std::max<int64_t>(1, at::get_num_threads())));
  const Convolution largest{most, channels, outputs, height, width, kh, kw, padding};
  const int64_t workspace = largest.workspace_bytes();
  const int64_t planes_bytes = channels_last ? aligned(most * in_image * sizeof(float)) : 0;
  const Scratch scratch(workspace + planes_bytes + (channels_last ? aligned(most * out_image * sizeof(float)) : 0));
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    uint8_t* region = scratch.region();
    // calls of at most ``most`` images (more than one where a thread's share is larger)
    for (int64_t first = begin; first < end; first += most) {
      const int64_t images = std::min(most, end - first);
      const float* planes =
          as_planes(input, channels_last, first, images, reinterpret_cast<float*>(region + workspace));
      float* result = out.data_ptr<float>() + first * out_image;
      float* target = channels_last ? reinterpret_cast<float*>(region + workspace + planes_bytes) : result;
      const Convolution convolution{images, channels, outputs, height, width, kh, kw, padding};
      convolution(planes, weight.data_ptr<float>(), shift.data_ptr<float>(), target, region);
      if (channels_last)
        for (int64_t image = 0; image < images; ++image)
          transpose(target + image * out_image, out_positions, result + image * out_image, outputs, outputs,
                    out_positions);
    }
  });
  return out;
}

// The weight gradient of out = input * weight (stride 1, zero padding), [O, C, kH, kW], from input [N, C, H, W]
// and grad [N, O, Ho, Wo] (each NCHW-contiguous or channels-last): the convolution of input^T [C, N, H, W]
// (padded by NNPACK) with grad^T [O, N, Ho, Wo] as its kernel. Each thread takes a slice of the images (the
// sum's index), so neither operand's transform is repeated across threads; the slices' partial gradients are
// added at the end.
at::Tensor nnpack_conv2d_weight_grad(const at::Tensor& input, const at::Tensor& grad, int64_t padding) {
  TORCH_CHECK(initialised(), "nnpack_conv2d_weight_grad: NNPACK does not initialise on this CPU");
  TORCH_CHECK(input.dim() == 4 && grad.dim() == 4 && input.size(0) == grad.size(0),
              "nnpack_conv2d_weight_grad: expected input [N, C, H, W] and grad [N, O, Ho, Wo], got ", input.sizes(),
              " and ", grad.sizes());
  TORCH_CHECK(input.scalar_type() == at::kFloat && grad.scalar_type() == at::kFloat && input.device().is_cpu() &&
                  grad.device().is_cpu(),
              "nnpack_conv2d_weight_grad: float32 CPU tensors only");
  const bool input_channels_last = is_channels_last(input, "nnpack_conv2d_weight_grad");
  const bool grad_channels_last = is_channels_last(grad, "nnpack_conv2d_weight_grad");
  const int64_t n = input.size(0), channels = input.size(1), outputs = grad.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  const int64_t padded_h = height + 2 * padding, padded_w = width + 2 * padding;
  const int64_t out_h = grad.size(2), out_w = grad.size(3);
  const int64_t kh = padded_h - out_h + 1, kw = padded_w - out_w + 1;
  TORCH_CHECK(padding >= 0 && kh > 0 && kw > 0 && out_h <= 16 && out_w <= 16,
              "nnpack_conv2d_weight_grad: maps up to 16x16 (the gradient is NNPACK's kernel), got ", grad.sizes());
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  at::Tensor partial = at::zeros({threads, channels, outputs, kh, kw}, input.options());
  const at::Tensor zeros = at::zeros({outputs}, input.options());
  const int64_t plane = height * width, out_positions = out_h * out_w;
  const int64_t most = std::min(kMaxImagesPerCall, divide_up(n, threads));
  // images as channels: [C, images, H, W] * [O, images, Ho, Wo] -> [C, O, kH, kW], NNPACK padding the maps
  const Convolution largest{channels, most, outputs, height, width, out_h, out_w, padding};
  const int64_t workspace = largest.workspace_bytes();
  const int64_t maps_bytes = aligned(channels * most * plane * sizeof(float));
  const int64_t kernel_bytes = aligned(outputs * most * out_positions * sizeof(float));
  const int64_t weights = channels * outputs * kh * kw;
  const Scratch scratch(workspace + maps_bytes + kernel_bytes + aligned(weights * sizeof(float)));
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    uint8_t* region = scratch.region();
    float* maps = reinterpret_cast<float*>(region + workspace);                               // [C, images, H, W]
    float* kernel = reinterpret_cast<float*>(region + workspace + maps_bytes);                // [O, images, Ho, Wo]
    float* part = reinterpret_cast<float*>(region + workspace + maps_bytes + kernel_bytes);  // [C, O, kH, kW]
    float* sum = partial[at::get_thread_num()].data_ptr<float>();
    const float* x = input.data_ptr<float>();
    const float* g = grad.data_ptr<float>();
    for (int64_t first = begin; first < end; first += most) {
      const int64_t images = std::min(most, end - first);
      for (int64_t image = 0; image < images; ++image) {
        if (input_channels_last)  // [H W, C] -> C planes, images * H * W apart
          transpose(x + (first + image) * plane * channels, channels, maps + image * plane, images * plane, plane,
                    channels);
        else
          for (int64_t c = 0; c < channels; ++c)
            std::memcpy(maps + (c * images + image) * plane, x + ((first + image) * channels + c) * plane,
                        plane * sizeof(float));
        if (grad_channels_last)
          transpose(g + (first + image) * out_positions * outputs, outputs, kernel + image * out_positions,
                    images * out_positions, out_positions, outputs);
        else
          for (int64_t o = 0; o < outputs; ++o)
            std::memcpy(kernel + (o * images + image) * out_positions,
                        g + ((first + image) * outputs + o) * out_positions, out_positions * sizeof(float));
      }
      const Convolution convolution{channels, images, outputs, height, width, out_h, out_w, padding};
      convolution(maps, kernel, zeros.data_ptr<float>(), part, region);
      for (int64_t i = 0; i < weights; ++i) sum[i] += part[i];
    }
  });
  return partial.sum(0).transpose(0, 1).contiguous();
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(metalab_native, m) {
  m.def("nnpack_conv2d(Tensor input, Tensor weight, Tensor? bias, int padding) -> Tensor");
  m.def("nnpack_conv2d_weight_grad(Tensor input, Tensor grad, int padding) -> Tensor");
}

TORCH_LIBRARY_IMPL(metalab_native, CPU, m) {
  m.impl("nnpack_conv2d", &nnpack_conv2d);
  m.impl("nnpack_conv2d_weight_grad", &nnpack_conv2d_weight_grad);
}
