#include "cli/serve_command.h"

#include <google/protobuf/stubs/logging.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>

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
    if (opt->count() > 0) continue;
    std::vector<std::string> values;
    if (it->is_array()) {
      for (const auto& v : *it) values.push_back(config_scalar(v));
    } else {
      values.push_back(config_scalar(*it));
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
  // Signals are taken by sigwait below, never by a handler: block them before any thread starts
  // so that every thread (gRPC's too) inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Status st = resolve_flags(f);
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
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("received {}; draining", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
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
      ->capture_default_str();
  cmd->add_option("--preload", flags->preload,
                  "TASK=DIR: serve the adapter in DIR under TASK from the start (repeatable)");
  cmd->add_option("--admin-load-threads", o.admin_load_threads,
                  "Adapter loads (of different tasks) that run at once; those of one task run in "
                  "order")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  cmd->add_option("--drain-timeout", o.drain_timeout_s,
                  "Seconds that requests in flight get to finish after SIGTERM/SIGINT")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-request-bytes", o.max_request_bytes,
                  "Largest request message accepted (bytes); larger: RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(1, std::numeric_limits<int32_t>::max()));
  cmd->add_option("--max-concurrent-streams", o.max_concurrent_streams,
                  "Inference calls open at once, over all connections; more: RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(1, std::numeric_limits<int32_t>::max()));
  cmd->add_option("--http-listen", o.http.listen,
                  "HTTP address of the OpenAI-compatible API and /health (\"\": no HTTP)")
      ->envname("LORASERVE_HTTP_LISTEN")
      ->capture_default_str();
  cmd->add_option("--api-key", o.http.api_key,
                  "HTTP /v1/* requests need 'Authorization: Bearer KEY' (/health stays open)")
      ->envname("LORASERVE_API_KEY");
  cmd->add_option("--served-model-name", o.served_model_name,
                  "The base model's name in the HTTP API (default: the model folder's name)");
  cmd->add_option("--http-threads", o.http.threads,
                  "HTTP connections served at once (an open stream holds one)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--ready-file", flags->ready_file,
                  "Once serving, write {\"listen\", \"admin_listen\", \"http_listen\", \"pid\"} "
                  "as JSON here");
  cmd->add_option("--log-level", flags->log_level, "trace, debug, info, warn, error, off")
      ->capture_default_str();
  cmd->add_option("--config", flags->config,
                  "JSON file of flags ({\"max-batch-size\": 64, ...}); flags given here win");
  cmd->callback([flags, exit_code, cmd] { *exit_code = run_serve(*flags, cmd); });
}

}  // namespace loraserve::cli
