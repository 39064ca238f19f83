#include "kernels/cpu/cpu_features.h"

#include <atomic>
#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

namespace loraserve::kernels::cpu {
namespace {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// AMX-BF16 from CPUID leaf 7 (EDX bit 22), usable only when the OS saves the tile state (XCR0
// bits 17 and 18; XGETBV needs OSXSAVE, CPUID leaf 1 ECX bit 27). Read directly: clang 14's
// __builtin_cpu_supports does not know "amx-bf16".
bool has_amx_bf16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return false;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 22))) return false;
  uint32_t xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const uint32_t tile_state = (1u << 17) | (1u << 18);
  return (xcr0_lo & tile_state) == tile_state;
}
#endif

CpuFeatures read_features() {
  CpuFeatures f;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = f.avx2_fma && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl");
  f.avx512_bf16 = f.avx512 && __builtin_cpu_supports("avx512bf16");
  f.avx512_vnni = f.avx512 && __builtin_cpu_supports("avx512vnni");
  f.amx_bf16 = has_amx_bf16();
#endif
  return f;
}

std::atomic<KernelLevel> g_cap{KernelLevel::kAvx512Bf16};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = read_features();
  return features;
}

std::string describe_cpu_features() {
#if defined(__x86_64__)
  const CpuFeatures& f = cpu_features();
  std::string out;
  auto add = [&out](bool has, const char* name) {
    if (!has) return;
    if (!out.empty()) out += ' ';
    out += name;
  };
  add(f.avx2_fma, "AVX2+FMA");
  add(f.avx512, "AVX-512");
  add(f.avx512_bf16, "AVX512_BF16");
  add(f.avx512_vnni, "AVX512_VNNI");
  add(f.amx_bf16, "AMX-BF16");
  return out.empty() ? "baseline x86-64" : out;
#else
  return "not x86-64";
#endif
}

std::string_view kernel_level_name(KernelLevel level) {
  switch (level) {
    case KernelLevel::kPortable:
      return "portable";
    case KernelLevel::kAvx2:
      return "avx2";
    case KernelLevel::kAvx512:
      return "avx512";
    case KernelLevel::kAvx512Bf16:
      return "avx512-bf16";
  }
  return "?";
}

KernelLevel best_kernel_level() {
  const CpuFeatures& f = cpu_features();
  if (f.avx512_bf16) return KernelLevel::kAvx512Bf16;
  if (f.avx512) return KernelLevel::kAvx512;
  if (f.avx2_fma) return KernelLevel::kAvx2;
  return KernelLevel::kPortable;
}

KernelLevel kernel_level() {
  const KernelLevel best = best_kernel_level();
  const KernelLevel cap = g_cap.load(std::memory_order_relaxed);
  return cap < best ? cap : best;
}

void cap_kernel_level(KernelLevel cap) { g_cap.store(cap, std::memory_order_relaxed); }

}  // namespace loraserve::kernels::cpu
