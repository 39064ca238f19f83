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
// Two cases each: "first" loads into a host tier with room for all (a server that has just
// started: each load takes memory fresh from the OS), and "evicting" loads into a full host tier
// of --host-adapters (a busy server: each load first evicts the least recently used adapter).
//
//   cold_load_bench [--presets demo,8b-layers] [--adapters 40] [--rank 16] [--host-adapters 8]
//
// "demo" is the shipped demo model's shapes (models/demo/config.json); "8b-layers" the
// Llama-3-8B layer shapes of bench_util's preset (2 layers). Each shape is measured with
// adapters on all seven projections and on q_proj/v_proj only.
#include <spdlog/spdlog.h>
#include <sys/mman.h>

#include <CLI/CLI.hpp>
#include <condition_variable>
#include <cstring>
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
  int host_adapters = 8;
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

// Milliseconds to write `bytes` of memory fresh from the OS (median of 5): the floor of a load
// that cannot reuse a buffer, which on virtual machines that return freed memory to the host
// is far above a copy's cost.
double fresh_memory_ms(size_t bytes) {
  std::vector<double> ms;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 0.0;
    std::memset(p, 1, bytes);
    ms.push_back(bench::seconds_since(t0) * 1e3);
    ::munmap(p, bytes);
  }
  return percentile(ms, 0.5);
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
  for (const bool evicting : {false, true}) {
    if (evicting && o.host_adapters >= o.adapters) continue;
    auto backend = kernels::create_cpu_backend(1);
    const int host = evicting ? o.host_adapters : o.adapters + 1;
    adapters::AdapterRegistry registry(c, backend.get(), adapters::RegistryOptions{host, o.rank});
    server::AdapterLoader loader(&registry, ar, /*on_demand=*/true);
    // Evicting: the tier is filled by loads not timed, with the adapters timed after them.
    const int first = evicting ? o.host_adapters : 0;
    for (int i = 0; i < first; ++i)
      LS_RETURN_IF_ERROR(timed_resolve(loader, fmt::format("task{}", i)).status());
    std::vector<double> cold, warm;
    for (int i = first; i < o.adapters; ++i) {
      LS_ASSIGN_OR_RETURN(double s, timed_resolve(loader, fmt::format("task{}", i)));
      cold.push_back(s * 1e3);
      LS_ASSIGN_OR_RETURN(double w, timed_resolve(loader, fmt::format("task{}", i)));
      warm.push_back(w * 1e3);
    }
    fmt::print(
        "{:<9} rank {} {:<6} {:>6.2f} MiB/adapter {:<17} cold load: p50 {:6.2f} ms  p99 {:6.2f} "
        "ms  (min {:.2f}, max {:.2f})   registered: p50 {:.4f} ms   [{} loads]{}\n",
        preset, o.rank, qv_only ? "q,v" : "all 7", static_cast<double>(bytes) / (1 << 20),
        evicting ? fmt::format("evicting (of {})", o.host_adapters) : "first",
        percentile(cold, 0.5), percentile(cold, 0.99), percentile(cold, 0.0), percentile(cold, 1.0),
        percentile(warm, 0.5), cold.size(),
        evicting ? ""
                 : fmt::format("   (writing {:.2f} MiB of fresh memory: {:.2f} ms)",
                               static_cast<double>(bytes) / (1 << 20), fresh_memory_ms(bytes)));
  }
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
  app.add_option("--host-adapters", o.host_adapters,
                 "Host tier of the evicting case (0 or >= --adapters: that case is skipped)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
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
