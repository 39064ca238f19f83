// cold_load_bench: what a request for a task that nobody has loaded yet waits before the engine
// sees it, i.e. what on-demand loading adds to its time to first token: the AdapterLoader's
// load of <root>/<task> (open, parse, validate, convert to the compute dtype, register), timed
// from resolve() to its callback, as the server's request path calls it. The adapters are
// rank-R PEFT folders written first and read once, so they come from the page cache (the
// common case on a busy server; a cold disk adds its own read time). Beside it, the same call
// for a task already registered (a lease: the warm case). On a GPU the first step also uploads
// the adapter to a slot (asynchronously, overlapping other steps); on the CPU a slot reads the
// host copy, so that adds nothing here.
//
//   cold_load_bench [--presets demo,8b-layers] [--adapters 40] [--rank 16]
//
// "demo" is the shipped demo model's shapes (models/demo/config.json); "8b-layers" the
// Llama-3-8B layer shapes of bench_util's preset (2 layers). Each shape is measured with
// adapters on all seven projections and on q_proj/v_proj only.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <condition_variable>
#include <filesystem>

#include "bench/bench_util.h"
#include "cli/common_flags.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/adapter_loader.h"
#include "tests/adapters/adapter_test_util.h"

namespace {

using namespace loraserve;
namespace fs = std::filesystem;

struct Options {
  std::vector<std::string> presets = {"demo", "8b-layers"};
  int adapters = 40;
  int rank = 16;
};

Result<formats::ModelConfig> shapes(const std::string& preset) {
  if (preset != "demo") return bench::preset_config(preset);
  LS_ASSIGN_OR_RETURN(const std::string dir, cli::default_model_dir_or_error());
  return formats::load_model_config(dir);
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// Reads every file under `dir` once, so that the loads below find them in the page cache.
void warm_page_cache(const fs::path& dir) {
  std::vector<char> buf(1 << 20);
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    while (in.read(buf.data(), static_cast<std::streamsize>(buf.size()))) {
    }
  }
}

// Resolves `task` through the loader and waits for the callback: seconds taken.
Result<double> timed_resolve(server::AdapterLoader& loader, const std::string& task) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<adapters::AdapterLease>> got;
  const auto t0 = std::chrono::steady_clock::now();
  loader.resolve(task, [&](Result<adapters::AdapterLease> r) {
    std::lock_guard<std::mutex> lock(mu);
    got = std::move(r);
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return got.has_value(); });
  const double secs = bench::seconds_since(t0);
  if (!got->ok()) return got->status();
  return secs;
}

Status run(const Options& o, const std::string& preset, bool qv_only) {
  LS_ASSIGN_OR_RETURN(const formats::ModelConfig c, shapes(preset));
  auto backend = kernels::create_cpu_backend(1);
  adapters::AdapterRegistry registry(c, backend.get(),
                                     adapters::RegistryOptions{o.adapters + 1, o.rank});
  testing::TempDir root;
  uint64_t bytes = 0;
  for (int i = 0; i < o.adapters; ++i) {
    testing::AdapterSpec spec = testing::make_adapter_spec(c, o.rank, 100 + i);
    if (qv_only) {
      spec.config["target_modules"] = {"q_proj", "v_proj"};
      std::erase_if(spec.tensors, [](const auto& t) {
        return t.first.find("q_proj") == std::string::npos &&
               t.first.find("v_proj") == std::string::npos;
      });
    }
    testing::write_adapter(spec, root.path() / fmt::format("task{}", i));
    if (i == 0) bytes = fs::file_size(root.path() / "task0" / "adapter_model.safetensors");
  }
  warm_page_cache(root.path());
  LS_ASSIGN_OR_RETURN(auto ar, server::AdapterRoot::create(root.path().string()));
  server::AdapterLoader loader(&registry, ar, /*on_demand=*/true);
  std::vector<double> cold, warm;
  for (int i = 0; i < o.adapters; ++i) {
    LS_ASSIGN_OR_RETURN(double s, timed_resolve(loader, fmt::format("task{}", i)));
    cold.push_back(s * 1e3);
    LS_ASSIGN_OR_RETURN(double w, timed_resolve(loader, fmt::format("task{}", i)));
    warm.push_back(w * 1e3);
  }
  fmt::print(
      "{:<9} rank {} {:<9} {:>7.2f} MiB/adapter  cold load: p50 {:6.2f} ms  p99 {:6.2f} ms  "
      "(min {:.2f}, max {:.2f})   registered: p50 {:.4f} ms   [{} adapters]\n",
      preset, o.rank, qv_only ? "q,v" : "all 7", static_cast<double>(bytes) / (1 << 20),
      percentile(cold, 0.5), percentile(cold, 0.99), percentile(cold, 0.0), percentile(cold, 1.0),
      percentile(warm, 0.5), o.adapters);
  return ok_status();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app("What loading an adapter on its first request adds to the request's TTFT");
  app.add_option("--presets", o.presets, "Shapes: demo, small, 8b-layers, tiny")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--adapters", o.adapters, "Adapters per shape (each loaded once, cold)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--rank", o.rank, "LoRA rank")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  for (const auto& preset : o.presets) {
    for (bool qv : {false, true}) {
      Status st = run(o, preset, qv);
      if (!st.ok()) {
        fmt::print(stderr, "cold_load_bench: {}\n", st.to_string());
        return 1;
      }
    }
  }
  return 0;
}
