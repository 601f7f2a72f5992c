// 32-byte SIMD vectors (8 floats or 4 doubles: one AVX2 register) written with GCC/Clang vector
// extensions, so that the kernels compile to AVX2 where the build enables it and to SSE pairs elsewhere.
#pragma once

#include <cstdint>

namespace metalab_native {

template <typename scalar_t>
struct Vec {
  typedef scalar_t type __attribute__((vector_size(32)));
  static constexpr int64_t lanes = 32 / sizeof(scalar_t);
  static type load(const scalar_t* p) { type v; __builtin_memcpy(&v, p, sizeof v); return v; }
  static void store(scalar_t* p, type v) { __builtin_memcpy(p, &v, sizeof v); }
  static type broadcast(scalar_t x) { return type{} + x; }  // scalar operands are splat: one vbroadcast
  // integers of the lanes' width (what comparisons return): window positions 0..4, stored as bytes
  using ints = decltype(type{} < type{});
  static ints splat(int64_t x) { return ints{} + static_cast<decltype(ints{}[0])>(x); }
  typedef uint8_t bytes __attribute__((vector_size(lanes)));
  static void store_bytes(uint8_t* p, ints v) { bytes b = __builtin_convertvector(v, bytes); __builtin_memcpy(p, &b, sizeof b); }
  static ints load_bytes(const uint8_t* p) { bytes b; __builtin_memcpy(&b, p, sizeof b); return __builtin_convertvector(b, ints); }
  // the first ``count`` (< lanes) lanes, for the tail of a row of channels; the other lanes get ``fill``
  static type load_partial(const scalar_t* p, int64_t count, scalar_t fill = 0) {
    type v = broadcast(fill);
    for (int64_t l = 0; l < count; ++l) v[l] = p[l];
    return v;
  }
  static void store_partial(scalar_t* p, type v, int64_t count) { for (int64_t l = 0; l < count; ++l) p[l] = v[l]; }
  static ints load_bytes_partial(const uint8_t* p, int64_t count, uint8_t fill) {
    ints v = splat(fill);
    for (int64_t l = 0; l < count; ++l) v[l] = p[l];
    return v;
  }
  static void store_bytes_partial(uint8_t* p, ints v, int64_t count) {
    for (int64_t l = 0; l < count; ++l) p[l] = static_cast<uint8_t>(v[l]);
  }
  // ``count`` lanes (all of them, or the tail of a row of channels)
  static type load_n(const scalar_t* p, int64_t count) { return count == lanes ? load(p) : load_partial(p, count); }
  static void store_n(scalar_t* p, type v, int64_t count) { if (count == lanes) store(p, v); else store_partial(p, v, count); }
  static ints load_bytes_n(const uint8_t* p, int64_t count, uint8_t fill) {
    return count == lanes ? load_bytes(p) : load_bytes_partial(p, count, fill);
  }
  static void store_bytes_n(uint8_t* p, ints v, int64_t count) {
    if (count == lanes) store_bytes(p, v); else store_bytes_partial(p, v, count);
  }
};

}  // namespace metalab_native
