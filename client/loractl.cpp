// loractl: the command line client of a loraserve server. Readable output by default; --json
// prints the server's messages as JSON (proto field names) for scripts. Exit codes: 0 success,
// 1 an RPC failed (or `health` found the server not serving), 2 bad flags. With --servers,
// load and unload go to the admin address of every replica at once (a fleet behind a balancer).
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cli/flag_checks.h"
#include "client/client.h"
#include "client/http_load_generator.h"
#include "client/load_generator.h"
#include "client/trace.h"

namespace loraserve::client {
namespace {

struct GlobalFlags {
  ClientOptions client;
  std::vector<std::string> servers;  // admin addresses of every replica: load/unload fan out
  bool json = false;
};

struct GenerateFlags {
  std::vector<std::string> tasks;  // several: the same prompt to each, all at once
  std::string text;
  std::vector<int32_t> ids;
  std::string request_id;
  std::optional<int32_t> max_tokens;
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<int32_t> top_k;
  std::optional<uint64_t> seed;
  std::optional<int32_t> logprobs;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  std::optional<float> repetition_penalty;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  float min_p = 0.0f;
  int32_t min_tokens = 0;
  std::vector<std::string> logit_bias;  // ID=BIAS
  std::vector<int32_t> allowed_token_ids;
};

struct BenchFlags {
  TraceOptions trace;
  std::string http;        // host:port: send the trace to the HTTP API instead of gRPC
  std::string api_key;     // for --http
  std::string base_model;  // --http: the base model's name ("" leaves `model` out)
  std::string prompt_len = "16:64";
  std::string output_len = "16:64";
  bool include_base = false;
  bool no_progress = false;
  std::vector<std::string> tenants;  // TASK=RATE[:REQUESTS]
};

std::string to_json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(m, &out, o).ok()) return "{}";
  return out;
}

int fail(const Status& st) {
  std::cerr << "loractl: " << st.to_string() << "\n";
  return 1;
}

// "ID=BIAS" of --logit-bias: a token id >= 0 and a number.
std::optional<std::pair<int32_t, float>> parse_logit_bias(const std::string& s) {
  const size_t eq = s.find('=');
  if (eq == std::string::npos) return std::nullopt;
  int32_t id = -1;
  float bias = 0.0f;
  const char* end = s.data() + s.size();
  const auto a = std::from_chars(s.data(), s.data() + eq, id);
  if (a.ec != std::errc() || a.ptr != s.data() + eq || id < 0) return std::nullopt;
  try {
    size_t used = 0;
    bias = std::stof(s.substr(eq + 1), &used);
    if (used != static_cast<size_t>(end - (s.data() + eq + 1))) return std::nullopt;
  } catch (const std::exception&) {
    return std::nullopt;
  }
  return std::pair{id, bias};
}

void add_generate_flags(CLI::App* cmd, GenerateFlags* g) {
  auto* prompt = cmd->add_option_group("prompt", "the prompt: text or token ids");
  prompt->add_option("--text,text", g->text, "Prompt text (needs a model with a tokenizer)");
  prompt->add_option("--ids", g->ids, "Prompt token ids (comma separated)")->delimiter(',');
  prompt->require_option(1);
  cmd->add_option("--task", g->tasks,
                  "Task ID of the adapter (default: the base model; \"\" is the base model too)");
  cmd->add_option("--request-id", g->request_id, "Echoed back and written in the server's log");
  cmd->add_option("--max-tokens", g->max_tokens, "Most tokens to generate");
  cmd->add_option("--temperature", g->temperature, "0: greedy (server default 1.0)");
  cmd->add_option("--top-p", g->top_p, "Nucleus sampling, in (0, 1]");
  cmd->add_option("--top-k", g->top_k, "Keep the k most likely tokens (0: off)");
  cmd->add_option("--seed", g->seed, "Seed of the request's random generator");
  cmd->add_option("--logprobs", g->logprobs, "Report logprobs with K alternatives per token");
  cmd->add_option("--stop", g->stop, "Stop string (repeatable)");
  cmd->add_option("--stop-token-id", g->stop_token_ids, "Stop token id (repeatable)");
  cmd->add_flag("--ignore-eos", g->ignore_eos, "Keep generating past end-of-sequence tokens");
  cmd->add_option("--repetition-penalty", g->repetition_penalty,
                  "Tokens of the prompt and output: positive logits / P, negative ones * P (> 0; "
                  "1: off)");
  cmd->add_option("--frequency-penalty", g->frequency_penalty,
                  "Minus this times a token's count in the output, in [-2, 2]");
  cmd->add_option("--presence-penalty", g->presence_penalty,
                  "Minus this once for every token in the output, in [-2, 2]");
  cmd->add_option("--min-p", g->min_p,
                  "Sample only tokens at least this times as likely as the top one, in [0, 1]");
  cmd->add_option("--min-tokens", g->min_tokens,
                  "No EOS, stop token or stop string before this many tokens");
  cmd->add_option("--logit-bias", g->logit_bias,
                  "ID=BIAS: add BIAS in [-100, 100] to a token's logit (repeatable)")
      ->check(CLI::Validator(
          [](std::string& s) {
            return parse_logit_bias(s) ? std::string() : "expected ID=BIAS, got " + s;
          },
          "ID=BIAS"));
  cmd->add_option("--allowed-token-id", g->allowed_token_ids,
                  "Only these tokens can be generated (repeatable)");
}

v1::GenerateRequest build_request(const GenerateFlags& g, const std::string& task) {
  v1::GenerateRequest r;
  r.set_request_id(g.request_id);
  r.set_task_id(task);
  if (!g.ids.empty()) {
    r.mutable_token_ids()->mutable_ids()->Add(g.ids.begin(), g.ids.end());
  } else {
    r.set_text(g.text);
  }
  v1::SamplingParams* p = r.mutable_params();
  if (g.max_tokens) p->set_max_tokens(*g.max_tokens);
  if (g.temperature) p->set_temperature(*g.temperature);
  if (g.top_p) p->set_top_p(*g.top_p);
  if (g.top_k) p->set_top_k(*g.top_k);
  if (g.seed) p->set_seed(*g.seed);
  if (g.logprobs) p->set_logprobs(*g.logprobs);
  for (const auto& s : g.stop) p->add_stop(s);
  for (int32_t id : g.stop_token_ids) p->add_stop_token_ids(id);
  p->set_ignore_eos(g.ignore_eos);
  if (g.repetition_penalty) p->set_repetition_penalty(*g.repetition_penalty);
  p->set_frequency_penalty(g.frequency_penalty);
  p->set_presence_penalty(g.presence_penalty);
  p->set_min_p(g.min_p);
  p->set_min_tokens(g.min_tokens);
  for (int32_t id : g.allowed_token_ids) p->add_allowed_token_ids(id);
  for (const auto& s : g.logit_bias) {
    const auto bias = parse_logit_bias(s);  // checked by the flag's validator
    if (bias) (*p->mutable_logit_bias())[bias->first] = bias->second;
  }
  return r;
}

std::string finish_name(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_EOS:
      return "eos";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

template <typename Message>
void print_summary(const Message& m) {
  std::fprintf(stderr,
               "[%s] finish %s, prompt %u + completion %u tokens, queue %.1f ms, first token "
               "%.1f ms, total %.1f ms\n",
               m.request_id().c_str(), finish_name(m.finish_reason()).c_str(),
               m.usage().prompt_tokens(), m.usage().completion_tokens(), m.timing().queue_ms(),
               m.timing().time_to_first_token_ms(), m.timing().total_ms());
}

std::string join_ids(const google::protobuf::RepeatedField<int32_t>& ids) {
  std::string out;
  for (int32_t id : ids) {
    if (!out.empty()) out += ' ';
    out += std::to_string(id);
  }
  return out;
}

// Several tasks: the same prompt goes to each at once (concurrent calls, so the server runs them
// in one mixed batch); one line per task, in the order given: "task<TAB>text", or with --json
// the response with a "task_id" field added.
int run_generate_tasks(const GlobalFlags& gf, const GenerateFlags& g) {
  Client client(gf.client);
  std::vector<std::optional<Result<v1::GenerateResponse>>> results(g.tasks.size());
  {
    std::vector<std::jthread> calls;
    for (size_t i = 0; i < g.tasks.size(); ++i) {
      calls.emplace_back(
          [&, i] { results[i].emplace(client.generate(build_request(g, g.tasks[i]))); });
    }
  }
  int code = 0;
  for (size_t i = 0; i < g.tasks.size(); ++i) {
    const std::string& task = g.tasks[i];
    const Result<v1::GenerateResponse>& r = *results[i];
    if (!r.ok()) {
      std::cerr << "loractl: task '" << task << "': " << r.status().to_string() << "\n";
      code = 1;
      continue;
    }
    if (gf.json) {
      nlohmann::json j = nlohmann::json::parse(to_json(*r), nullptr, /*allow_exceptions=*/false);
      j["task_id"] = task;
      std::cout << j.dump() << "\n";
    } else {
      const std::string out =
          !r->text().empty() || g.ids.empty() ? r->text() : join_ids(r->token_ids());
      std::cout << (task.empty() ? "(base)" : task) << "\t" << out << "\n";
    }
  }
  return code;
}

int run_generate(const GlobalFlags& gf, const GenerateFlags& g) {
  if (g.tasks.size() > 1) return run_generate_tasks(gf, g);
  Client client(gf.client);
  auto r = client.generate(build_request(g, g.tasks.empty() ? "" : g.tasks[0]));
  if (!r.ok()) return fail(r.status());
  if (gf.json) {
    std::cout << to_json(*r) << "\n";
    return 0;
  }
  if (!r->text().empty() || g.ids.empty()) {
    std::cout << r->text() << "\n";
  } else {
    std::cout << join_ids(r->token_ids()) << "\n";
  }
  for (const auto& lp : r->logprobs()) {
    std::fprintf(stderr, "  token %d logprob %.4f", lp.token_id(), lp.logprob());
    for (const auto& t : lp.top()) std::fprintf(stderr, "  [%d %.4f]", t.token_id(), t.logprob());
    std::fprintf(stderr, "\n");
  }
  print_summary(*r);
  return 0;
}

int run_stream(const GlobalFlags& gf, const GenerateFlags& g) {
  if (g.tasks.size() > 1) {
    std::cerr << "loractl: stream takes one --task (generate takes several)\n";
    return 2;
  }
  Client client(gf.client);
  const bool ids_only = !g.ids.empty();
  bool printed_any = false;
  v1::GenerateStreamResponse last;
  Status st = client.generate_stream(build_request(g, g.tasks.empty() ? "" : g.tasks[0]),
                                     [&](const v1::GenerateStreamResponse& m) {
                                       if (gf.json) {
                                         std::cout << to_json(m) << "\n" << std::flush;
                                       } else if (ids_only && m.text().empty()) {
                                         if (m.token_ids_size() > 0)
                                           std::cout << (printed_any ? " " : "")
                                                     << join_ids(m.token_ids()) << std::flush;
                                         printed_any = printed_any || m.token_ids_size() > 0;
                                       } else {
                                         std::cout << m.text() << std::flush;
                                         printed_any = true;
                                       }
                                       last = m;
                                       return true;
                                     });
  if (!gf.json) std::cout << "\n";
  if (!st.ok()) return fail(st);
  if (!gf.json) print_summary(last);
  return 0;
}

int run_tokenize(const GlobalFlags& gf, const std::string& text, bool no_special) {
  Client client(gf.client);
  auto r = client.tokenize(text, !no_special);
  if (!r.ok()) return fail(r.status());
  std::cout << (gf.json ? to_json(*r) : join_ids(r->token_ids())) << "\n";
  return 0;
}

std::string residence(const v1::AdapterInfo& a) {
  if (a.residence() == v1::RESIDENCE_DEVICE_SLOT) return "slot " + std::to_string(a.device_slot());
  return "host";
}

void print_adapter(const v1::AdapterInfo& a) {
  std::string targets;
  for (const auto& t : a.target_modules()) targets += (targets.empty() ? "" : ",") + t;
  const std::string rank = a.min_rank() == a.max_rank()
                               ? std::to_string(a.max_rank())
                               : std::to_string(a.min_rank()) + "-" + std::to_string(a.max_rank());
  std::printf(
      "%-24s v%-4llu rank %-6s alpha %-6g %-8s %8.1f KiB %-4s  %-8s served %llu, in flight %lld  "
      "%s\n",
      a.task_id().c_str(), static_cast<unsigned long long>(a.version()), rank.c_str(),
      a.lora_alpha(), a.use_rslora() ? "rslora" : "", static_cast<double>(a.bytes()) / 1024.0,
      a.dtype().c_str(), residence(a).c_str(), static_cast<unsigned long long>(a.requests_served()),
      static_cast<long long>(a.in_flight()), a.path().c_str());
  std::printf("%-24s targets %s\n", "", targets.c_str());
}

// --servers: `call` on every replica's admin address at once. One line per replica, in the order
// given: "ADDRESS<TAB>what `describe` says" or "ADDRESS<TAB>ERROR CODE: message"; with --json
// {"server", "ok", "response" or "error": {"code", "message"}}. 1 when any replica failed.
template <typename Response>
int fan_out(const GlobalFlags& gf, const std::function<Result<Response>(const Client&)>& call,
            const std::function<std::string(const Response&)>& describe) {
  std::vector<std::optional<Result<Response>>> results(gf.servers.size());
  {
    std::vector<std::jthread> calls;
    for (size_t i = 0; i < gf.servers.size(); ++i) {
      calls.emplace_back([&, i] {
        ClientOptions options = gf.client;
        options.admin_address = gf.servers[i];
        results[i].emplace(call(Client(options)));
      });
    }
  }
  size_t failed = 0;
  for (size_t i = 0; i < gf.servers.size(); ++i) {
    const Result<Response>& r = *results[i];
    failed += r.ok() ? 0 : 1;
    if (gf.json) {
      nlohmann::json j = {{"server", gf.servers[i]}, {"ok", r.ok()}};
      if (r.ok()) {
        j["response"] = nlohmann::json::parse(to_json(*r), nullptr, /*allow_exceptions=*/false);
      } else {
        j["error"] = {{"code", std::string(status_code_name(r.status().code()))},
                      {"message", r.status().message()}};
      }
      std::cout << j.dump() << "\n";
    } else {
      std::cout << gf.servers[i] << "\t"
                << (r.ok() ? describe(*r) : "ERROR " + r.status().to_string()) << "\n";
    }
  }
  if (failed > 0) {
    std::cerr << "loractl: " << failed << " of " << gf.servers.size() << " replicas failed\n";
  }
  return failed > 0 ? 1 : 0;
}

int run_load_adapter(const GlobalFlags& gf, const std::string& task, const std::string& path,
                     bool replace) {
  if (!gf.servers.empty()) {
    return fan_out<v1::AdapterInfo>(
        gf, [&](const Client& c) { return c.load_adapter(task, path, replace); },
        [&](const v1::AdapterInfo& a) {
          return std::string(replace ? "replaced " : "loaded ") + a.task_id() + " version " +
                 std::to_string(a.version()) + " from " + a.path();
        });
  }
  Client client(gf.client);
  auto r = client.load_adapter(task, path, replace);
  if (!r.ok()) return fail(r.status());
  if (gf.json) {
    std::cout << to_json(*r) << "\n";
  } else {
    print_adapter(*r);
  }
  return 0;
}

int run_unload(const GlobalFlags& gf, const std::string& task) {
  if (!gf.servers.empty()) {
    return fan_out<v1::UnloadAdapterResponse>(
        gf, [&](const Client& c) { return c.unload_adapter(task); },
        [&](const v1::UnloadAdapterResponse& r) {
          return "unloaded " + task + " (version " + std::to_string(r.version()) + ")";
        });
  }
  Client client(gf.client);
  auto r = client.unload_adapter(task);
  if (!r.ok()) return fail(r.status());
  if (gf.json) {
    std::cout << to_json(*r) << "\n";
  } else {
    std::printf("unloaded %s (version %llu)\n", task.c_str(),
                static_cast<unsigned long long>(r->version()));
  }
  return 0;
}

int run_list(const GlobalFlags& gf) {
  Client client(gf.client);
  auto r = client.list_adapters();
  if (!r.ok()) return fail(r.status());
  if (gf.json) {
    std::cout << to_json(*r) << "\n";
    return 0;
  }
  if (r->adapters().empty()) std::printf("no adapters loaded\n");
  for (const auto& a : r->adapters()) print_adapter(a);
  return 0;
}

int run_info(const GlobalFlags& gf) {
  Client client(gf.client);
  auto r = client.server_info();
  if (!r.ok()) return fail(r.status());
  if (gf.json) {
    std::cout << to_json(*r) << "\n";
    return 0;
  }
  const v1::Limits& l = r->limits();
  std::printf("loraserve %s\nmodel      %s (%s, %u layers, hidden %u, vocab %u%s)\n",
              r->version().c_str(), r->model().c_str(), r->architecture().c_str(), r->num_layers(),
              r->hidden_size(), r->vocab_size(), r->has_tokenizer() ? ", tokenizer" : "");
  std::printf("backend    %s: %s, weights %s, compute %s\n", r->backend().c_str(),
              r->device().c_str(), r->weight_dtype().c_str(), r->compute_dtype().c_str());
  std::printf(
      "limits     batch %u sequences / %u tokens, queue %u, context %u, default max_tokens %u\n"
      "           KV cache %u blocks of %u tokens, LoRA rank <= %u, %u device slots, %u host "
      "adapters\n",
      l.max_batch_size(), l.max_batched_tokens(), l.max_queue(), l.max_context(),
      l.default_max_tokens(), l.kv_blocks(), l.kv_block_size(), l.max_lora_rank(),
      l.max_device_adapters(), l.max_host_adapters());
  std::printf(
      "requests   %u bytes, %u open calls, prompt %s tokens, %u stop strings of %u bytes, %u "
      "stop ids, logprobs %u, task ID %u characters, request ID %u bytes\n",
      l.max_request_bytes(), l.max_concurrent_streams(),
      l.max_prompt_tokens() == 0 ? "context" : std::to_string(l.max_prompt_tokens()).c_str(),
      l.max_stop_strings(), l.max_stop_bytes(), l.max_stop_token_ids(), l.max_logprobs(),
      l.max_task_id_length(), l.max_request_id_bytes());
  return 0;
}

int run_stats(const GlobalFlags& gf) {
  Client client(gf.client);
  auto r = client.stats();
  if (!r.ok()) return fail(r.status());
  if (gf.json) {
    std::cout << to_json(*r) << "\n";
    return 0;
  }
  std::printf("requests   %u running, %u queued, %llu finished\n", r->requests_running(),
              r->requests_queued(), static_cast<unsigned long long>(r->requests_finished()));
  for (const auto& w : r->waiting_for_adapter())
    std::printf("           %u waiting for a slot for %s\n", w.requests(), w.task_id().c_str());
  std::printf("KV cache   %u blocks used, %u free; %llu preemptions\n", r->kv_blocks_used(),
              r->kv_blocks_free(), static_cast<unsigned long long>(r->preemptions()));
  std::printf("adapters   %u slots used, %u free; %llu loads, %llu evictions\n",
              r->adapter_slots_used(), r->adapter_slots_free(),
              static_cast<unsigned long long>(r->adapter_loads()),
              static_cast<unsigned long long>(r->adapter_evictions()));
  std::printf("tokens     %llu prompt, %llu generated in %llu steps\n",
              static_cast<unsigned long long>(r->prompt_tokens()),
              static_cast<unsigned long long>(r->tokens_generated()),
              static_cast<unsigned long long>(r->steps()));
  for (const auto& t : r->tasks()) {
    std::printf("  %-24s %llu requests, %llu prompt + %llu completion tokens\n",
                t.task_id().empty() ? "(base)" : t.task_id().c_str(),
                static_cast<unsigned long long>(t.requests()),
                static_cast<unsigned long long>(t.prompt_tokens()),
                static_cast<unsigned long long>(t.completion_tokens()));
  }
  return 0;
}

int run_health(const GlobalFlags& gf, const std::string& service, bool admin) {
  Client client(gf.client);
  auto r = client.health(service, admin);
  if (!r.ok()) return fail(r.status());
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*r);
  if (gf.json) {
    std::cout << nlohmann::json{{"service", service}, {"status", name}}.dump() << "\n";
  } else {
    std::cout << name << "\n";
  }
  return *r == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

nlohmann::json percentiles_json(const Percentiles& p) {
  return {{"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}};
}

int run_bench(const GlobalFlags& gf, BenchFlags& b) {
  Client client(gf.client);
  TraceOptions& t = b.trace;
  Status st = parse_range(b.prompt_len, "--prompt-len", &t.prompt_min, &t.prompt_max);
  if (st.ok()) st = parse_range(b.output_len, "--output-len", &t.output_min, &t.output_max);
  if (!st.ok()) {
    std::cerr << "loractl bench: " << st.message() << "\n";
    return 2;
  }
  std::vector<Tenant> tenants;
  for (const std::string& spec : b.tenants) {
    auto tenant = parse_tenant(spec, t.requests);
    if (!tenant.ok()) {
      std::cerr << "loractl bench: " << tenant.status().message() << "\n";
      return 2;
    }
    tenants.push_back(std::move(*tenant));
  }
  if (!tenants.empty() && !t.tasks.empty()) {
    std::cerr << "loractl bench: --tenants names the tasks; leave --tasks out\n";
    return 2;
  }
  if (t.vocab_size == 0 || (t.tasks.empty() && tenants.empty())) {
    auto info = client.server_info();
    if (t.vocab_size == 0) {
      if (!info.ok()) {
        std::cerr << "loractl bench: --vocab-size is needed when Admin is not reachable ("
                  << info.status().to_string() << ")\n";
        return 2;
      }
      t.vocab_size = static_cast<int32_t>(info->vocab_size());
    }
    if (t.tasks.empty() && tenants.empty()) {
      auto list = client.list_adapters();
      if (list.ok())
        for (const auto& a : list->adapters()) t.tasks.push_back(a.task_id());
    }
  }
  if (tenants.empty() && (b.include_base || t.tasks.empty())) t.tasks.push_back("");
  for (const Tenant& tenant : tenants) t.tasks.push_back(tenant.task_id);
  auto trace = tenants.empty() ? make_trace(t) : make_tenant_trace(t, tenants);
  if (!trace.ok()) {
    std::cerr << "loractl bench: " << trace.status().message() << "\n";
    return 2;
  }
  const bool bar = !b.no_progress;
  const bool tty = isatty(STDERR_FILENO) != 0;
  auto progress = [&](const LoadProgress& p) {
    if (!bar) return;
    constexpr int kWidth = 30;
    const int filled = p.total > 0 ? kWidth * p.finished / p.total : 0;
    std::fprintf(stderr, "%s[%s%s] %d/%d done, %d sent, %.1f s, %.0f tokens/s%s", tty ? "\r" : "",
                 std::string(static_cast<size_t>(filled), '#').c_str(),
                 std::string(static_cast<size_t>(kWidth - filled), '.').c_str(), p.finished,
                 p.total, p.sent, p.elapsed_s,
                 p.elapsed_s > 0 ? static_cast<double>(p.tokens) / p.elapsed_s : 0.0,
                 tty ? "   " : "\n");
  };
  LoadResult r;
  if (b.http.empty()) {
    r = run_load(client, *trace, progress);
  } else {
    r = run_http_load({b.http, b.api_key, b.base_model, gf.client.timeout_s}, *trace, progress);
  }
  if (bar && tty) std::fprintf(stderr, "\n");
  if (gf.json) {
    nlohmann::json errors = nlohmann::json::object();
    for (const auto& [k, n] : r.errors) errors[k] = n;
    nlohmann::json per_task = nlohmann::json::object();
    for (const auto& [task, l] : r.tasks) {
      per_task[task] = {{"requests", l.requests},
                        {"succeeded", l.succeeded},
                        {"completion_tokens", l.completion_tokens},
                        {"duration_s", l.duration_s},
                        {"tokens_per_s", l.tokens_per_s},
                        {"ttft_ms", percentiles_json(l.ttft_ms)},
                        {"tpot_ms", percentiles_json(l.tpot_ms)}};
    }
    const nlohmann::json j = {{"transport", b.http.empty() ? "grpc" : "http"},
                              {"requests", r.requests},
                              {"succeeded", r.succeeded},
                              {"errors", errors},
                              {"rate", t.rate},
                              {"tasks", t.tasks.size()},
                              {"duration_s", r.duration_s},
                              {"requests_per_s", r.requests_per_s},
                              {"tokens_per_s", r.tokens_per_s},
                              {"prompt_tokens", r.prompt_tokens},
                              {"completion_tokens", r.completion_tokens},
                              {"ttft_ms", percentiles_json(r.ttft_ms)},
                              {"tpot_ms", percentiles_json(r.tpot_ms)},
                              {"per_task", per_task}};
    std::cout << j.dump() << "\n";
  } else {
    std::printf("%s: %d requests (%d ok) over %zu tasks in %.2f s: %.2f req/s, %.1f tokens/s\n",
                b.http.empty() ? "gRPC" : "HTTP", r.requests, r.succeeded, t.tasks.size(),
                r.duration_s, r.requests_per_s, r.tokens_per_s);
    std::printf("TTFT ms   p50 %8.1f  p90 %8.1f  p99 %8.1f\n", r.ttft_ms.p50, r.ttft_ms.p90,
                r.ttft_ms.p99);
    std::printf("TPOT ms   p50 %8.2f  p90 %8.2f  p99 %8.2f\n", r.tpot_ms.p50, r.tpot_ms.p90,
                r.tpot_ms.p99);
    if (r.tasks.size() > 1) {
      std::printf("%-20s %8s %10s %9s %9s %9s %9s\n", "task", "requests", "tokens/s", "TTFT p50",
                  "TTFT p90", "TTFT p99", "TPOT p50");
      for (const auto& [task, l] : r.tasks) {
        std::printf("%-20s %8d %10.1f %9.1f %9.1f %9.1f %9.2f\n",
                    task.empty() ? "(base)" : task.c_str(), l.succeeded, l.tokens_per_s,
                    l.ttft_ms.p50, l.ttft_ms.p90, l.ttft_ms.p99, l.tpot_ms.p50);
      }
    }
    for (const auto& [k, n] : r.errors) std::printf("%d x %s\n", n, k.c_str());
  }
  return r.succeeded == r.requests ? 0 : 1;
}

}  // namespace
}  // namespace loraserve::client

int main(int argc, char** argv) {
  using namespace loraserve::client;
  CLI::App app{"loractl: talk to a loraserve server"};
  app.require_subcommand(1);
  app.fallthrough();  // the global flags may also follow the subcommand
  GlobalFlags gf;
  app.add_option("--server", gf.client.address, "Inference address")
      ->envname("LORASERVE_SERVER")
      ->capture_default_str();
  app.add_option("--admin-server", gf.client.admin_address, "Admin address")
      ->envname("LORASERVE_ADMIN_SERVER")
      ->capture_default_str();
  app.add_option("--token", gf.client.admin_token, "Admin token")->envname("LORASERVE_ADMIN_TOKEN");
  app.add_option("--timeout", gf.client.timeout_s, "Deadline of each call in seconds (0: none)")
      ->capture_default_str()
      // A year at most: a deadline past the clock's range overflows.
      ->check(loraserve::cli::finite_in(365.0 * 86400.0));
  app.add_option("--servers", gf.servers,
                 "Admin addresses of every replica (comma separated): load and unload go to each")
      ->delimiter(',')
      ->envname("LORASERVE_SERVERS");
  app.add_flag("--json", gf.json, "Print JSON for scripts");
  int code = 0;
  // The commands that talk to one server refuse --servers rather than ignore it.
  auto servers_misused = [] {
    std::cerr << "loractl: --servers applies to load and unload only\n";
    return 2;
  };

  GenerateFlags gen;
  CLI::App* generate = app.add_subcommand(
      "generate", "Generate a completion (several --task: the same prompt to each, at once)");
  add_generate_flags(generate, &gen);
  generate->callback(
      [&] { code = gf.servers.empty() ? run_generate(gf, gen) : servers_misused(); });

  GenerateFlags str;
  CLI::App* stream = app.add_subcommand("stream", "Generate, printing tokens as they arrive");
  add_generate_flags(stream, &str);
  stream->callback([&] { code = gf.servers.empty() ? run_stream(gf, str) : servers_misused(); });

  std::string text;
  bool no_special = false;
  CLI::App* tokenize = app.add_subcommand("tokenize", "Encode text with the model's tokenizer");
  tokenize->add_option("text", text, "Text to encode")->required();
  tokenize->add_flag("--no-special", no_special, "Do not add special tokens such as BOS");
  tokenize->callback(
      [&] { code = gf.servers.empty() ? run_tokenize(gf, text, no_special) : servers_misused(); });

  std::string task, path;
  bool replace = false;
  CLI::App* load = app.add_subcommand("load", "Load (or --replace) an adapter under a task ID");
  load->add_option("task", task, "Task ID")->required();
  load->add_option("path", path, "Adapter folder, relative to the server's --adapter-root")
      ->required();
  load->add_flag("--replace", replace, "Replace the adapter served under the task ID");
  load->callback([&] { code = run_load_adapter(gf, task, path, replace); });

  CLI::App* unload = app.add_subcommand("unload", "Stop serving a task");
  unload->add_option("task", task, "Task ID")->required();
  unload->callback([&] { code = run_unload(gf, task); });

  app.add_subcommand("list", "List the adapters served")->callback([&] {
    code = gf.servers.empty() ? run_list(gf) : servers_misused();
  });
  app.add_subcommand("info", "Model, backend and limits")->callback([&] {
    code = gf.servers.empty() ? run_info(gf) : servers_misused();
  });
  app.add_subcommand("stats", "Load, KV cache and per-task counters")->callback([&] {
    code = gf.servers.empty() ? run_stats(gf) : servers_misused();
  });

  std::string service;
  bool admin = false;
  CLI::App* health =
      app.add_subcommand("health", "Health check; exit 0 only when SERVING (for HEALTHCHECK)");
  health->add_option("--service", service, "Service name ('': the whole server)");
  health->add_flag("--admin", admin, "Ask the admin address instead");
  health->callback(
      [&] { code = gf.servers.empty() ? run_health(gf, service, admin) : servers_misused(); });

  BenchFlags bench;
  CLI::App* b = app.add_subcommand(
      "bench",
      "Load test: Poisson arrivals, Zipf task popularity or per-tenant rates (prints req/s, "
      "TTFT, TPOT, and per task)");
  b->add_option("--requests", bench.trace.requests, "Requests in the trace")->capture_default_str();
  b->add_option("--rate", bench.trace.rate, "Requests per second (0: all at once, saturation)")
      ->capture_default_str();
  b->add_option("--tasks", bench.trace.tasks,
                "Task IDs, most popular first (default: every adapter the server lists)")
      ->delimiter(',');
  b->add_flag("--include-base", bench.include_base, "Also send requests to the base model");
  b->add_option("--zipf", bench.trace.zipf, "Zipf exponent of task popularity")
      ->capture_default_str();
  b->add_option("--prompt-len", bench.prompt_len, "Prompt lengths MIN:MAX")->capture_default_str();
  b->add_option("--output-len", bench.output_len, "Output lengths MIN:MAX")->capture_default_str();
  b->add_option("--vocab-size", bench.trace.vocab_size, "Prompt ids < this (default: the model's)");
  b->add_option("--seed", bench.trace.seed, "Seed of the trace")->capture_default_str();
  b->add_option("--tenants", bench.tenants,
                "TASK=RATE[:REQUESTS] per tenant, each with its own Poisson arrivals (RATE 0: all "
                "at once; REQUESTS defaults to --requests; an empty TASK is the base model), "
                "instead of --tasks")
      ->delimiter(',');
  b->add_flag("--no-progress", bench.no_progress, "No progress bar");
  b->add_option("--http", bench.http,
                "HOST:PORT of the HTTP listener: send the trace as streaming /v1/completions "
                "requests instead of gRPC (same trace, same figures)");
  b->add_option("--api-key", bench.api_key, "With --http: the API key")
      ->envname("LORASERVE_API_KEY");
  b->add_option("--base-model", bench.base_model,
                "With --http: the base model's name for its requests (default: no model field)");
  b->callback([&] { code = gf.servers.empty() ? run_bench(gf, bench) : servers_misused(); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints the message (or the help: exit 0); a wrong flag exits 2, as loractl's own
    // refusals do.
    return app.exit(e) == 0 ? 0 : 2;
  }
  return code;
}
