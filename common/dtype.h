// Element types of weights and activations, and the scalar conversions between them.
// Header-only; the conversions are exact (bf16/f16 -> f32) or round-to-nearest-even.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace loraserve {

// kI8 is not a checkpoint dtype (parse_dtype never returns it): it is the CPU backend's int8
// weight format, signed values with one f32 scale per kI8GroupSize consecutive elements of a row
// (see kernels::Tensor::scales).
enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI8 };

// Elements of a row that share one int8 scale: symmetric, per output channel (row) in groups
// along the input dimension. 64 keeps the scales at 1/16 of the int8 bytes (f32 scales) while an
// outlier spoils only its own 64 weights.
inline constexpr int64_t kI8GroupSize = 64;

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kI32:
      return 4;
    case DType::kF16:
      return 2;
    case DType::kBF16:
      return 2;
    case DType::kI8:
      return 1;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kI8:
      return "I8";
  }
  return "?";
}

// Accepts the safetensors spellings ("F32", "BF16") and the config.json ones ("float32", ...).
inline std::optional<DType> parse_dtype(std::string_view s) {
  if (s == "F32" || s == "float32") return DType::kF32;
  if (s == "F16" || s == "float16") return DType::kF16;
  if (s == "BF16" || s == "bfloat16") return DType::kBF16;
  if (s == "I32" || s == "int32") return DType::kI32;
  return std::nullopt;
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {                                               // subnormal or zero in f16
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // f16 subnormal = m * 2^-24, so drop (126 - e) bits
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return static_cast<uint16_t>(sign | r);
}

// Element `i` of the array at `src`, read bytewise: a tensor in a file may sit at any offset,
// so `src` need not be aligned for T (compilers turn this into one plain load).
template <typename T>
inline T load_unaligned(const void* src, size_t i) {
  T v;
  std::memcpy(&v, static_cast<const unsigned char*>(src) + i * sizeof(T), sizeof(T));
  return v;
}

// Converts `n` elements of `src` (any alignment) to f32 (I8: the raw integers; its scales live
// apart).
inline void convert_to_f32(DType src_type, const void* src, float* dst, size_t n) {
  if (n == 0) return;  // an empty tensor's data may be null, which memcpy must never get
  switch (src_type) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_unaligned<uint16_t>(src, i));
      return;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_unaligned<uint16_t>(src, i));
      return;
    case DType::kI32:
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load_unaligned<int32_t>(src, i));
      return;
    case DType::kI8: {
      const auto* s = static_cast<const int8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
  }
}

}  // namespace loraserve
