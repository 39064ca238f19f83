// kernel_bench: every CPU matmul path that runs here, for F32, BF16 and I8 weights, on the
// weight shapes of a preset's layer (fused QKV, O, fused gate/up, down) and its lm_head, at
// several row counts; the figures behind cpu_matmul.cpp's choice of path. Paths are interleaved
// (each repeat runs every path once) so that the machine's noise falls on all of them alike.
//   kernel_bench --preset 8b-layers --rows 1,8,32,512 --repeats 5
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <ctime>
#include <map>
#include <random>

#include "bench/bench_util.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_matmul.h"
#include "kernels/cpu/cpu_onednn.h"

namespace loraserve::bench {
namespace {

using kernels::Tensor;
using kernels::cpu::MatmulPath;

// One layer's weights (and the lm_head) in one dtype.
struct WeightSet {
  DType dtype;
  std::vector<std::vector<char>> storage;
  std::vector<Tensor> tensors;
  double bytes = 0;
};

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

WeightSet make_set(DType dtype, const std::vector<std::pair<int64_t, int64_t>>& shapes) {
  WeightSet set;
  set.dtype = dtype;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-0.02f, 0.02f);
  for (auto [out, in] : shapes) {
    const size_t bytes = kernels::weight_storage_bytes(dtype, out, in);
    std::vector<char> buf(bytes + 64);
    void* base = buf.data() + (64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64;
    const Tensor t = kernels::weight_view(base, dtype, out, in);
    std::vector<float> src(static_cast<size_t>(out * in));
    for (auto& v : src) v = u(rng);
    if (!kernels::cpu::convert_weights(t, src.data(), DType::kF32).ok()) std::abort();
    set.storage.push_back(std::move(buf));
    set.tensors.push_back(t);
    set.bytes += static_cast<double>(bytes);
  }
  return set;
}

int run(int argc, char** argv) {
  CLI::App app{"kernel_bench: CPU matmul paths per weight dtype and row count"};
  std::string preset = "8b-layers";
  std::vector<int> rows = {1, 8, 32, 512};
  std::vector<std::string> dtypes = {"f32", "bf16", "int8"};
  int repeats = 5;
  int threads = 0;
  app.add_option("--preset", preset, "small, 8b-layers or tiny")->capture_default_str();
  app.add_option("--rows", rows, "Row counts")->delimiter(',')->capture_default_str();
  app.add_option("--dtypes", dtypes, "f32, bf16, int8")->delimiter(',')->capture_default_str();
  app.add_option("--repeats", repeats)->capture_default_str();
  app.add_option("--threads", threads, "0: all cores")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  auto config = preset_config(preset);
  if (!config.ok()) {
    spdlog::error("{}", config.status().to_string());
    return 2;
  }
  const auto& c = *config;
  auto backend = kernels::create_cpu_backend(threads);  // sets the OpenMP and BLAS threads
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {c.q_dim() + 2 * c.kv_dim(), c.hidden_size},
      {c.hidden_size, c.q_dim()},
      {2 * c.intermediate_size, c.hidden_size},
      {c.hidden_size, c.intermediate_size},
      {c.vocab_size, c.hidden_size}};
  std::vector<WeightSet> sets;
  for (const std::string& d : dtypes) {
    auto parsed = kernels::parse_weights_dtype_flag(d);
    if (!parsed.ok() || !parsed->has_value()) {
      spdlog::error("--dtypes: '{}' is not f32, bf16 or int8", d);
      return 2;
    }
    sets.push_back(make_set(**parsed, shapes));
  }
  const int max_rows = *std::max_element(rows.begin(), rows.end());
  int64_t widest = 0;
  for (auto [out, in] : shapes) widest = std::max({widest, out, in});
  std::vector<float> x(static_cast<size_t>(max_rows * widest), 0.01f);
  std::vector<float> y(static_cast<size_t>(max_rows * widest));
  spdlog::info("measuring read bandwidth (1 GiB, best of 5)");
  const double bw = measure_read_bandwidth(1ull << 30, 5);
  fmt::print("preset {} (one layer's weights and the lm_head); {}; {}\n", preset,
             backend->describe(), kernels::cpu::onednn::describe());
  fmt::print("read bandwidth: {:.2f} GB/s (1 GiB sum, best of 5)\n", bw / 1e9);
  fmt::print(
      "per weight tensor: median and fastest of {} interleaved runs, summed over the "
      "tensors; GB/s, % of the bandwidth probe and GFLOP/s from the fastest\n",
      repeats);
  fmt::print("{:>5} {:>5} {:>20} {:>10} {:>10} {:>9} {:>8} {:>8} {:>10}\n", "rows", "dtype", "path",
             "ms (med)", "ms (min)", "GB/s", "% bw", "GFLOP/s", "CPU ms");
  const MatmulPath paths[] = {MatmulPath::kRowsPortable, MatmulPath::kRowsAvx2,
                              MatmulPath::kRowsAvx512,   MatmulPath::kRowsBf16Dot,
                              MatmulPath::kRowsI8Vnni,   MatmulPath::kBlas,
                              MatmulPath::kOneDnn};
  for (int n : rows) {
    // (set, path) → per weight tensor, its times; every repeat runs every path once.
    std::map<std::pair<size_t, int>, std::vector<std::vector<double>>> times, cpu_times;
    for (int r = 0; r < repeats; ++r) {
      for (size_t s = 0; s < sets.size(); ++s) {
        for (MatmulPath p : paths) {
          if (!kernels::cpu::matmul_path_available(p, sets[s].dtype)) continue;
          // The portable kernels are for correctness; timing them on big shapes takes minutes.
          if (p == MatmulPath::kRowsPortable && n > 1) continue;
          auto& per_tensor = times[{s, static_cast<int>(p)}];
          per_tensor.resize(sets[s].tensors.size());
          for (size_t i = 0; i < sets[s].tensors.size(); ++i) {
            const Tensor& w = sets[s].tensors[i];
            const auto t0 = std::chrono::steady_clock::now();
            const double c0 = process_cpu_seconds();
            const Status st =
                kernels::cpu::matmul_via(p, n, x.data(), w.cols, w, 0.0f, y.data(), w.rows);
            per_tensor[i].push_back(seconds_since(t0));
            cpu_times[{s, static_cast<int>(p)}].resize(sets[s].tensors.size());
            cpu_times[{s, static_cast<int>(p)}][i].push_back(process_cpu_seconds() - c0);
            if (!st.ok()) {
              spdlog::error("{}", st.to_string());
              return 1;
            }
          }
        }
      }
      show_run_progress(r + 1, repeats);
    }
    double flops = 0;
    for (auto [out, in] : shapes) flops += 2.0 * n * static_cast<double>(out * in);
    for (const auto& [key, per_tensor] : times) {
      // A pass over all the tensors: the sum of each one's median, and of each one's fastest run
      // (on a shared machine the fastest is the one least disturbed).
      double median = 0, best = 0, cpu = 0;
      for (const auto& t : per_tensor) {
        const Summary sm = summarize(t);
        median += sm.median;
        best += sm.min;
      }
      for (const auto& t : cpu_times[key]) cpu += summarize(t).min;
      const WeightSet& set = sets[key.first];
      const auto path = static_cast<MatmulPath>(key.second);
      const bool chosen = kernels::cpu::choose_matmul_path(n, c.hidden_size, set.dtype) == path;
      fmt::print("{:>5} {:>5} {:>19}{} {:>10.2f} {:>10.2f} {:>9.2f} {:>7.1f}% {:>8.1f} {:>10.2f}\n",
                 n, dtype_name(set.dtype), kernels::cpu::matmul_path_name(path), chosen ? "*" : " ",
                 median * 1e3, best * 1e3, set.bytes / best / 1e9, 100.0 * set.bytes / best / bw,
                 flops / best / 1e9, cpu * 1e3);
    }
  }
  fmt::print("* the path matmul() chooses for that row count (shared dimension {})\n",
             c.hidden_size);
  return 0;
}

}  // namespace
}  // namespace loraserve::bench

int main(int argc, char** argv) { return loraserve::bench::run(argc, argv); }
