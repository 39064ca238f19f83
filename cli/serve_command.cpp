#include "cli/serve_command.h"

#include <fcntl.h>
#include <google/protobuf/stubs/logging.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/common_flags.h"
#include "common/excerpt.h"
#include "common/untrusted_json.h"
#include "server/server.h"

namespace loraserve::cli {
namespace {

namespace fs = std::filesystem;
using server::ServeOptions;
using server::Server;

struct ServeFlags {
  EngineFlags engine;
  ServeOptions serve;
  bool load_on_demand = false;
  bool no_load_on_demand = false;
  std::vector<std::string> preload;  // TASK=DIR
  std::string log_level = "info";
  std::string ready_file;
  std::string config;
};

std::string config_scalar(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return v.dump();
  if (v.is_number()) return fmt::format("{}", v.get<double>());
  return v.dump();  // the flag's own check refuses it, naming the flag
}

// Applies `--config FILE.json`: an object whose keys are the flag names without dashes
// ({"max-batch-size": 64, "preload": ["a=dir"]}). A flag given on the command line (or through
// its environment variable) wins over the file. The file is read as untrusted JSON, with the
// limits of the command line (or the defaults): the limits it sets apply to the files read after
// it.
Status apply_config_file(CLI::App* cmd, const std::string& path) {
  auto parsed = read_json_file(path);
  if (!parsed.ok()) return parsed.status().with_context("--config");
  const nlohmann::json& j = *parsed;
  const std::string shown = shown_path(path);
  if (!j.is_object()) {
    return invalid_argument_error("--config {}: not a JSON object (got {})", shown,
                                  json_excerpt(j));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    CLI::Option* opt = cmd->get_option_no_throw("--" + it.key());
    if (opt == nullptr || it.key() == "config")
      return invalid_argument_error("--config {}: unknown flag {}", shown, excerpt(it.key()));
    if (opt->count() > 0 || it->is_null()) continue;  // null: not set, as config files mean it
    // A text flag takes a string: `"api-key": false` would set the key "false".
    const bool text = opt->get_type_name() == "TEXT";
    std::vector<std::string> values;
    for (const auto& v : it->is_array() ? *it : nlohmann::json::array({*it})) {
      if (text && !v.is_string()) {
        return invalid_argument_error("--config {}: '{}' takes a string, got {}", shown, it.key(),
                                      json_excerpt(v));
      }
      values.push_back(config_scalar(v));
    }
    try {
      opt->add_result(values);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      return invalid_argument_error("--config {}: '{}': {}", shown, it.key(),
                                    excerpt(e.what(), 200));
    }
  }
  return ok_status();
}

// The pipe that on_stop_signal writes signal numbers to; next_stop_signal reads it.
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int signal_number) {
  const int saved = errno;  // a handler must leave errno as it found it
  const auto byte = static_cast<unsigned char>(signal_number);
  [[maybe_unused]] const ssize_t n = write(g_signal_pipe[1], &byte, 1);  // full pipe: dropped
  errno = saved;
}

Status install_stop_signals() {
  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0)
    return internal_error("cannot create the signal pipe: {}", std::strerror(errno));
  // The write end never blocks a handler.
  fcntl(g_signal_pipe[1], F_SETFL, fcntl(g_signal_pipe[1], F_GETFL) | O_NONBLOCK);
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (int signal_number : {SIGTERM, SIGINT}) {
    if (sigaction(signal_number, &action, nullptr) != 0)
      return internal_error("cannot handle signal {}: {}", signal_number, std::strerror(errno));
  }
  return ok_status();
}

// Waits for the next SIGTERM or SIGINT and returns its number.
int next_stop_signal() {
  for (;;) {
    unsigned char byte = 0;
    const ssize_t n = read(g_signal_pipe[0], &byte, 1);
    if (n == 1) return byte;
    if (n < 0 && errno != EINTR) return SIGTERM;  // cannot happen on a pipe we hold open
  }
}

const char* signal_name(int signal_number) {
  return signal_number == SIGINT ? "SIGINT" : "SIGTERM";
}

// Sends protobuf's own log lines (e.g. about malformed UTF-8 in a request) through spdlog.
void protobuf_log_handler(google::protobuf::LogLevel level, const char* file, int line,
                          const std::string& message) {
  if (level >= google::protobuf::LOGLEVEL_ERROR) {
    spdlog::debug("protobuf {}:{}: {}", file, line, message);
  } else {
    spdlog::trace("protobuf {}:{}: {}", file, line, message);
  }
}

Status write_ready_file(const std::string& path, const Server& server) {
  const nlohmann::json j = {{"listen", server.address()},
                            {"admin_listen", server.admin_address()},
                            {"http_listen", server.http_address()},
                            {"http_admin_listen", server.http_admin_address()},
                            {"pid", static_cast<int64_t>(getpid())}};
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump() << '\n';
    if (!out) return internal_error("cannot write --ready-file {}", tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return internal_error("cannot write --ready-file {}: {}", path, ec.message());
  return ok_status();
}

// Fills serve options from the flags; the demo model brings its adapters along.
Status resolve_flags(ServeFlags& f) {
  f.engine.finalize();
  ServeOptions& o = f.serve;
  o.model_dir = f.engine.model;
  o.backend = f.engine.backend;
  o.engine = f.engine.engine;
  o.version = LORASERVE_VERSION;
  if (o.model_dir.empty()) {
    LS_ASSIGN_OR_RETURN(o.model_dir, default_model_dir_or_error());
    // The demo model brings its adapters: preloaded under their folder names, and their folder
    // as the adapter root, unless the flags say otherwise.
    const fs::path adapters = fs::path(o.model_dir) / "adapters";
    if (o.adapter_root.empty() && f.preload.empty() && fs::is_directory(adapters)) {
      o.adapter_root = adapters.string();
      f.preload = bundled_adapter_specs(o.model_dir);
    }
  }
  for (const std::string& spec : f.preload) {
    LS_ASSIGN_OR_RETURN(auto task_dir, parse_task_dir(spec, "--preload"));
    o.preload.push_back(std::move(task_dir));
  }
  if (f.load_on_demand && f.no_load_on_demand)
    return invalid_argument_error("--load-on-demand and --no-load-on-demand contradict each other");
  // On by default wherever there is an adapter root to load from.
  o.load_on_demand = f.load_on_demand || (!f.no_load_on_demand && !o.adapter_root.empty());
  return ok_status();
}

int run_serve(ServeFlags& f, CLI::App* cmd) {
  set_json_limits(f.engine.json_limits);
  Status config = f.config.empty() ? ok_status() : apply_config_file(cmd, f.config);
  set_up_logging(f.log_level);
  if (!config.ok()) {
    spdlog::error("serve: {}", config.message());
    return 2;
  }
  set_json_limits(f.engine.json_limits);
  google::protobuf::SetLogHandler(protobuf_log_handler);
  // SIGTERM and SIGINT reach a handler that only writes their number to a pipe, which this
  // thread reads: a thread started before main (OpenBLAS starts its own then) does not block
  // them, and one delivered to it must not kill the process. Blocked in every thread started
  // from here on (gRPC's, the engine's), so that only this thread (or those) takes them.
  Status st = install_stop_signals();
  if (!st.ok()) {
    spdlog::error("serve: {}", st.message());
    return 1;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  st = resolve_flags(f);
  if (!st.ok()) {
    spdlog::error("serve: {}", st.message());
    return 2;
  }
  auto server = Server::listen(f.serve);
  if (!server.ok()) {
    spdlog::error("serve: {}", server.status().message());
    return server.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  st = (*server)->load();
  if (!st.ok()) {
    spdlog::error("serve: {}", st.to_string());
    (*server)->shutdown();
    return 1;
  }
  if (!f.ready_file.empty()) {
    st = write_ready_file(f.ready_file, **server);
    if (!st.ok()) spdlog::warn("serve: {}", st.message());
  }
  pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
  const int signal_number = next_stop_signal();
  spdlog::info("received {}; draining", signal_name(signal_number));
  // Later signals change nothing: the drain goes on, and says so.
  std::thread([] {
    for (;;) {
      spdlog::warn("received {} while draining: the drain goes on (SIGKILL stops at once)",
                   signal_name(next_stop_signal()));
    }
  }).detach();
  (*server)->shutdown();
  if (!f.ready_file.empty()) fs::remove(f.ready_file);
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<ServeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Serve the model and its LoRA adapters over gRPC (Inference, Admin, Health) and HTTP "
      "(OpenAI-compatible)");
  add_engine_flags(cmd, &flags->engine);
  cmd->get_option("--model")
      ->envname("LORASERVE_MODEL")
      ->description(
          "Hugging Face model folder (default: $LORASERVE_MODEL, else the shipped demo model)");
  ServeOptions& o = flags->serve;
  // The images set their defaults through these variables, so a user's flags replace them.
  cmd->add_option("--listen", o.listen, "Inference address (host:port; port 0 picks a free one)")
      ->envname("LORASERVE_LISTEN")
      ->capture_default_str();
  cmd->add_option("--admin-listen", o.admin_listen, "Admin address; Admin is served only here")
      ->envname("LORASERVE_ADMIN_LISTEN")
      ->capture_default_str();
  cmd->add_option("--admin-token", o.admin_token,
                  "Admin calls need 'authorization: Bearer TOKEN' (required off loopback)")
      ->envname("LORASERVE_ADMIN_TOKEN");
  cmd->add_option("--adapter-root", o.adapter_root,
                  "Folder that LoadAdapter paths are confined to (without it, Admin is off)");
  cmd->add_flag("--load-on-demand", flags->load_on_demand,
                "A request for an unregistered task loads <adapter-root>/<task> (the default "
                "with --adapter-root); adapters so loaded are evicted least recently used first "
                "when --max-host-adapters are loaded");
  cmd->add_flag("--no-load-on-demand", flags->no_load_on_demand,
                "Serve only adapters loaded by Admin or --preload");
  cmd->add_option("--metrics-max-tasks", o.metrics.max_tasks,
                  "Tasks with metric series of their own; later ones count under "
                  "task=\"(other)\"")
      ->capture_default_str()
      ->check(CLI::Range(1, kInt32Max));
  cmd->add_option("--preload", flags->preload,
                  "TASK=DIR: serve the adapter in DIR under TASK from the start (repeatable)");
  cmd->add_option("--admin-load-threads", o.admin_load_threads,
                  "Adapter loads (of different tasks) that run at once; those of one task run in "
                  "order")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  cmd->add_option("--drain-timeout", o.drain_timeout_s,
                  "Seconds that requests in flight get to finish after SIGTERM/SIGINT (past a "
                  "year: no limit)")
      ->capture_default_str()
      ->check(finite_in(1e12));
  cmd->add_option("--max-request-bytes", o.max_request_bytes,
                  "Largest request message accepted (bytes); larger: RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(1, std::numeric_limits<int32_t>::max()));
  cmd->add_option("--max-preparing-bytes", o.max_preparing_bytes,
                  "Request bytes parsed, rendered and tokenized at once, over all connections "
                  "(each takes up to ~30x its size while it is); more wait their turn")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--max-concurrent-streams", o.max_concurrent_streams,
                  "Inference calls open at once, over all connections; more: RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(1, std::numeric_limits<int32_t>::max()));
  cmd->add_option("--http-listen", o.http.listen,
                  "HTTP address of the OpenAI-compatible API and /health (\"\": no HTTP)")
      ->envname("LORASERVE_HTTP_LISTEN")
      ->capture_default_str();
  cmd->add_option("--http-admin-listen", o.http_admin_listen,
                  "HTTP address of vLLM's adapter routes (/v1/load_lora_adapter, "
                  "/v1/unload_lora_adapter) for LoRA sidecars, with /v1/models and /health; "
                  "--admin-token guards it, and is required off loopback (\"\": off)")
      ->envname("LORASERVE_HTTP_ADMIN_LISTEN")
      ->capture_default_str();
  cmd->add_option("--api-key", o.http.api_key,
                  "HTTP /v1/* requests need 'Authorization: Bearer KEY' (/health stays open)")
      ->envname("LORASERVE_API_KEY");
  cmd->add_option("--served-model-name", o.served_model_name,
                  "The base model's name in the HTTP API (default: the model folder's name)");
  o.http.threads = 0;  // default_http_threads(--max-concurrent-streams)
  cmd->add_option("--http-threads", o.http.threads,
                  "HTTP connections served at once (an open stream holds one; threads start "
                  "as needed); default: --max-concurrent-streams + 64")
      ->check(CLI::Range(1, server::kMaxHttpThreads));
  cmd->add_option("--ready-file", flags->ready_file,
                  "Once serving, write {\"listen\", \"admin_listen\", \"http_listen\", "
                  "\"http_admin_listen\", \"pid\"} as JSON here");
  add_log_level_flag(cmd, &flags->log_level);
  cmd->add_option("--config", flags->config,
                  "JSON file of flags ({\"max-batch-size\": 64, ...}); flags given here win");
  cmd->callback([flags, exit_code, cmd] { *exit_code = run_serve(*flags, cmd); });
}

}  // namespace loraserve::cli
