// Integer arithmetic on sizes read from files, which must not overflow (signed overflow is
// undefined behaviour, unsigned wraps silently). Each returns nullopt instead of overflowing.
// Header-only; thread-safe.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>

namespace loraserve {

template <typename T>
std::optional<T> checked_mul(T a, T b) {
  T out;
  if (__builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

template <typename T>
std::optional<T> checked_add(T a, T b) {
  T out;
  if (__builtin_add_overflow(a, b, &out)) return std::nullopt;
  return out;
}

// The product of `factors` (1 when empty), or nullopt when it overflows T.
template <typename T>
std::optional<T> checked_product(std::span<const T> factors) {
  T out = 1;
  for (T f : factors) {
    if (__builtin_mul_overflow(out, f, &out)) return std::nullopt;
  }
  return out;
}

template <typename T>
std::optional<T> checked_product(std::initializer_list<T> factors) {
  return checked_product(std::span<const T>(factors.begin(), factors.size()));
}

}  // namespace loraserve
