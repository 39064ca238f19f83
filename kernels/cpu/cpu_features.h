// The CPU features the CPU backend's kernels are chosen by, read once at run time, and the
// kernel level in use: the best this CPU runs, or lower when a test caps it (so every level the
// CPU has can be tested against the same reference).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace loraserve::kernels::cpu {

struct CpuFeatures {
  bool avx2_fma = false;
  bool avx512 = false;  // F, BW, DQ and VL, with the OS saving their registers
  bool avx512_bf16 = false;
  bool avx512_vnni = false;
  bool amx_bf16 = false;  // reported; AMX is reached through oneDNN's own dispatch
};

// Read once (CPUID through the compiler's run-time checks); thread-safe.
const CpuFeatures& cpu_features();
// "AVX2+FMA AVX-512 AVX512_BF16 AVX512_VNNI", or "baseline x86-64" / "not x86-64".
std::string describe_cpu_features();

// The instruction sets the own kernels come in, each including the ones before it.
enum class KernelLevel : uint8_t {
  kPortable,    // plain C++, any CPU
  kAvx2,        // AVX2 + FMA
  kAvx512,      // AVX-512 F/BW/DQ/VL
  kAvx512Bf16,  // AVX-512 with the bf16 dot product (VDPBF16PS)
};

std::string_view kernel_level_name(KernelLevel level);
// The best level this CPU runs.
KernelLevel best_kernel_level();
// The level the kernels use now: best_kernel_level(), or the cap if lower.
KernelLevel kernel_level();
// Tests: use at most `cap` (best_kernel_level() to undo). Not for use while GEMMs run.
void cap_kernel_level(KernelLevel cap);

}  // namespace loraserve::kernels::cpu
