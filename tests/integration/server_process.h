// Test helpers for running a real `loraserve serve` process on loopback: ServerProcess starts
// it on free ports (port 0, read back from its --ready-file), signals it and collects its exit
// status and log; Workspace builds a temporary adapter root and model folders from the
// fixtures; run_generate runs `loraserve generate` for reference outputs. Not thread-safe,
// except ServerProcess::signal.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace loraserve::testing {

namespace fs = std::filesystem;

// The fixture model the integration tests serve (fp32, vocab 256, context 128).
inline constexpr const char* kFixtureModel = "tests/reference/fixtures/llama_mha_f32";

class ServerProcess {
 public:
  // Starts `loraserve serve <args> --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
  // --ready-file ...` (and --threads 1 and --http-listen 127.0.0.1:0 unless args set them) and
  // waits until it serves (or exits, or `timeout_s` passes).
  static Result<std::unique_ptr<ServerProcess>> start(const std::vector<std::string>& args,
                                                      const fs::path& work_dir,
                                                      double timeout_s = 60.0);
  ~ServerProcess();  // SIGTERM when still running, SIGKILL when it has not exited 20 s later

  const std::string& address() const { return address_; }
  const std::string& admin_address() const { return admin_address_; }
  pid_t pid() const { return pid_; }
  // "127.0.0.1:PORT"; "" when the server was started with --http-listen "".
  const std::string& http_address() const { return http_address_; }
  // "127.0.0.1:PORT" of --http-admin-listen; "" when it is off.
  const std::string& http_admin_address() const { return http_admin_address_; }
  void signal(int sig) const;
  // Waits for the process to exit: its exit code, or 128 + signal, or -1 on timeout.
  int wait(double timeout_s);
  // What the server wrote to stderr and stdout so far.
  std::string log() const;
  // The log once it holds `needle` (request log lines are written off the engine thread, after
  // the client may already have its answer), or as it is after `timeout_s`.
  std::string log_with(const std::string& needle, double timeout_s = 20.0) const;

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  fs::path log_path_;
  std::string address_;
  std::string admin_address_;
  std::string http_address_;
  std::string http_admin_address_;
};

// The last `bytes` of the server's log, for failure messages.
std::string log_tail(const ServerProcess& server, size_t bytes = 6000);

// Runs a command; returns its exit code, with stdout in *out (stderr goes to `log`). With
// `timeout_s` > 0, a command still running then is killed and -1 returned.
int run_command(const std::vector<std::string>& argv, std::string* out, const fs::path& log,
                double timeout_s = 0);

// A temporary folder, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Copies the adapter folder `src` to `dst`, multiplying lora_alpha (and every alpha_pattern
// value) by `alpha_factor`: a distinct adapter with the same tensors.
void copy_adapter(const fs::path& src, const fs::path& dst, double alpha_factor);

// An adapter root with `n` distinct adapters of the fixture model, named t0..t<n-1>: the
// fixture's adapters, then copies of them with lora_alpha scaled (x2, x0.5, x3, ...).
std::vector<std::string> make_adapter_root(const fs::path& root, int n);

// A copy of the fixture model plus a byte-level BPE tokenizer.json (token id b is byte b, no
// merges), so the text paths run on a vocab-256 model.
fs::path make_model_with_tokenizer(const fs::path& dir);

// One request line of `loraserve generate`, and its output.
struct Reference {
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;  // of each token
  std::vector<float> gaps;      // top-1 minus top-2 logprob at each step
  std::string finish_reason;
};

// Runs `loraserve generate --model <model> --adapter ...` on `lines` (JSON objects; logprobs 2
// is added to each); the outputs in order.
Result<std::vector<Reference>> run_generate(const std::string& model,
                                            const std::vector<std::string>& adapters,
                                            const std::vector<nlohmann::json>& lines,
                                            const fs::path& work_dir);

// Number of leading tokens that must match the reference (DESIGN.md): those before the first
// step whose top-2 gap is below eps (a near tie rounding may flip); all when there is none.
size_t tokens_to_compare(const Reference& ref, float eps);

// The service names the server lists through reflection (grpc.reflection.v1alpha).
Result<std::vector<std::string>> reflection_services(const std::string& address);

std::string loraserve_binary();
std::string loractl_binary();

}  // namespace loraserve::testing
