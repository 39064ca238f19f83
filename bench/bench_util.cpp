#include "bench/bench_util.h"

#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "kernels/backend.h"

namespace loraserve::bench {

Result<formats::ModelConfig> preset_config(const std::string& name) {
  formats::ModelConfig c;
  c.architecture = formats::Architecture::kLlama;
  c.architecture_name = "LlamaForCausalLM";
  c.vocab_size = 32000;
  c.max_position_embeddings = c.max_context = 4096;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.torch_dtype = "float32";
  c.eos_token_ids = {2};
  c.bos_token_id = 1;
  if (name == "small") {
    c.hidden_size = 1024;
    c.num_layers = 8;
    c.num_heads = 16;
    c.num_kv_heads = 4;
    c.intermediate_size = 2816;
  } else if (name == "8b-layers") {
    c.hidden_size = 4096;
    c.num_layers = 2;
    c.num_heads = 32;
    c.num_kv_heads = 8;
    c.intermediate_size = 14336;
  } else if (name == "tiny") {
    c.hidden_size = 256;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.intermediate_size = 512;
    c.vocab_size = 1000;
  } else {
    return invalid_argument_error("unknown preset '{}' (small, 8b-layers, tiny)", name);
  }
  c.head_dim = c.hidden_size / c.num_heads;
  return c;
}

double decode_step_weight_bytes(double weight_bytes, const formats::ModelConfig& c,
                                DType weight_dtype) {
  return weight_bytes - static_cast<double>(kernels::weight_storage_bytes(
                            weight_dtype, c.vocab_size, c.hidden_size));
}

double measure_read_bandwidth(size_t bytes, int repeats) {
  const size_t n = bytes / sizeof(float) / 64 * 64;
  auto* a = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) a[i] = static_cast<float>(i & 1023) * 1e-3f;
  double best = 1e30;
  volatile float sink = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    float total = 0;
    // 64 independent partial sums per thread, so the adds keep up with memory and the figure is
    // the memory system's, not the add latency's.
#pragma omp parallel reduction(+ : total)
    {
      float acc[64] = {};
#pragma omp for schedule(static)
      for (size_t i = 0; i < n; i += 64) {
        for (int k = 0; k < 64; ++k) acc[k] += a[i + static_cast<size_t>(k)];
      }
      for (float v : acc) total += v;
    }
    best = std::min(best, seconds_since(t0));
    sink = sink + total;
  }
  std::free(a);
  return static_cast<double>(n * sizeof(float)) / best;
}

void show_run_progress(int run, int runs) {
  if (run < runs) {
    fmt::print(stderr, "\r  run {}/{}", run + 1, runs);
  } else {
    fmt::print(stderr, "\r{:30}\r", "");
  }
}

}  // namespace loraserve::bench
