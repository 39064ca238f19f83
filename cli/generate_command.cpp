#include "cli/generate_command.h"

#include <spdlog/spdlog.h>

#include <charconv>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/common_flags.h"
#include "cli/json_lines.h"
#include "common/excerpt.h"
#include "engine/loader.h"

namespace loraserve::cli {
namespace {

using nlohmann::json;

struct GenerateFlags {
  EngineFlags engine;
  std::string input = "-";
  std::string output;
  std::string log_level = "info";
  std::vector<std::string> adapters;  // TASK=DIR
};

// One input line's outcome: either an error, or the tokens as they arrive.
struct LineResult {
  Status error;
  bool want_logprobs = false;
  bool done = false;
  std::vector<engine::GeneratedToken> tokens;
  std::string text;
  bool has_text = false;
  engine::FinishReason finish = engine::FinishReason::kNone;
  Status finish_error;
};

// Fills `req` from one input line, held to `limits` (the task ID first); a "prompt" text is
// encoded with `tok` (null: none loaded) once the rest passed.
Status parse_line(const std::string& line, const tokenizer::Tokenizer* tok,
                  const engine::RequestLimits& limits, engine::GenerationRequest* req,
                  bool* want_logprobs) {
  LS_ASSIGN_OR_RETURN(const json j, parse_object_line(line));
  // An empty task is the base model, as on the wire.
  if (auto task = j.find("task");
      task != j.end() && task->is_string() && !task->get_ref<const std::string&>().empty())
    LS_RETURN_IF_ERROR(limits.check_task_id(task->get_ref<const std::string&>(), "task"));
  if (j.contains("prompt_token_ids") == j.contains("prompt")) {
    return invalid_argument_error("give exactly one of 'prompt' (text) and 'prompt_token_ids'");
  }
  auto& p = req->params;
  const std::string* prompt = nullptr;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    auto need_int = [&]() -> Status {
      if (!v.is_number_integer())
        return invalid_argument_error("field '{}' must be an integer, got {}", k, json_excerpt(v));
      return ok_status();
    };
    auto need_num = [&]() -> Status {
      if (!v.is_number())
        return invalid_argument_error("field '{}' must be a number, got {}", k, json_excerpt(v));
      return ok_status();
    };
    if (k == "prompt") {
      if (!v.is_string()) return invalid_argument_error("field 'prompt' must be a string");
      prompt = &v.get_ref<const std::string&>();
    } else if (k == "stop") {
      if (!v.is_array()) return invalid_argument_error("field 'stop' must be a list of strings");
      for (const json& t : v) {
        if (!t.is_string())
          return invalid_argument_error("field 'stop' holds {}, not a string", json_excerpt(t));
        p.stop.push_back(t.get<std::string>());
      }
    } else if (k == "skip_special_tokens") {
      if (!v.is_boolean())
        return invalid_argument_error("field 'skip_special_tokens' must be true or false");
      p.skip_special_tokens = v.get<bool>();
    } else if (k == "prompt_token_ids") {
      LS_ASSIGN_OR_RETURN(req->prompt_token_ids, token_id_list(v, k));
    } else if (k == "max_tokens") {
      LS_RETURN_IF_ERROR(need_int());
      p.max_tokens =
          static_cast<int32_t>(std::clamp<int64_t>(v.get<int64_t>(), INT32_MIN, INT32_MAX));
    } else if (k == "temperature") {
      LS_RETURN_IF_ERROR(need_num());
      p.temperature = v.get<float>();
    } else if (k == "top_p") {
      LS_RETURN_IF_ERROR(need_num());
      p.top_p = v.get<float>();
    } else if (k == "top_k") {
      LS_RETURN_IF_ERROR(need_int());
      p.top_k = static_cast<int32_t>(std::clamp<int64_t>(v.get<int64_t>(), INT32_MIN, INT32_MAX));
    } else if (k == "seed") {
      if (!v.is_number_unsigned())
        return invalid_argument_error("field 'seed' must be a non-negative integer");
      p.seed = v.get<uint64_t>();
    } else if (k == "logprobs") {
      LS_RETURN_IF_ERROR(need_int());
      p.logprobs =
          static_cast<int32_t>(std::clamp<int64_t>(v.get<int64_t>(), INT32_MIN, INT32_MAX));
      *want_logprobs = true;
    } else if (k == "ignore_eos") {
      if (!v.is_boolean())
        return invalid_argument_error("field 'ignore_eos' must be true or false");
      p.ignore_eos = v.get<bool>();
    } else if (k == "stop_token_ids") {
      LS_ASSIGN_OR_RETURN(p.stop_token_ids, token_id_list(v, k));
    } else if (k == "allowed_token_ids") {
      LS_ASSIGN_OR_RETURN(p.allowed_token_ids, token_id_list(v, k));
    } else if (k == "repetition_penalty" || k == "frequency_penalty" || k == "presence_penalty" ||
               k == "min_p") {
      LS_RETURN_IF_ERROR(need_num());
      const float x = v.get<float>();
      (k == "repetition_penalty"  ? p.repetition_penalty
       : k == "frequency_penalty" ? p.frequency_penalty
       : k == "presence_penalty"  ? p.presence_penalty
                                  : p.min_p) = x;
    } else if (k == "min_tokens") {
      LS_RETURN_IF_ERROR(need_int());
      p.min_tokens =
          static_cast<int32_t>(std::clamp<int64_t>(v.get<int64_t>(), INT32_MIN, INT32_MAX));
    } else if (k == "logit_bias") {
      // {"token id": bias}, as OpenAI's field; the engine checks the ids and the range.
      if (!v.is_object())
        return invalid_argument_error("field 'logit_bias' must be an object of token id -> bias");
      for (const auto& [id, bias] : v.items()) {
        int32_t token = -1;
        const auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), token);
        if (ec != std::errc() || end != id.data() + id.size() || token < 0) {
          return invalid_argument_error("field 'logit_bias': key {} is not a token id",
                                        excerpt(id, 24));
        }
        if (!bias.is_number()) {
          return invalid_argument_error("field 'logit_bias': the bias of {} must be a number",
                                        excerpt(id, 24));
        }
        p.logit_bias.emplace_back(token, bias.get<float>());
      }
    } else if (k == "task") {
      if (!v.is_string() && !v.is_null())
        return invalid_argument_error("field 'task' must be a string (a task ID)");
      if (v.is_string()) req->task_id = v.get<std::string>();
    } else if (k == "request_id") {
      if (!v.is_string()) return invalid_argument_error("field 'request_id' must be a string");
      req->request_id = v.get<std::string>();
    } else {
      return unknown_field_error(k);
    }
  }
  LS_RETURN_IF_ERROR(limits.check_request(*req));
  if (prompt != nullptr) {
    LS_RETURN_IF_ERROR(limits.check_prompt_text(*prompt).with_context("field 'prompt'"));
    if (tok == nullptr) {
      return invalid_argument_error(
          "field 'prompt' needs a tokenizer, and the model folder has no tokenizer.json "
          "(send prompt_token_ids)");
    }
    auto ids = tok->encode(*prompt, /*add_special_tokens=*/true);
    if (!ids.ok()) return ids.status().with_context("field 'prompt'");
    req->prompt_token_ids = std::move(*ids);
  }
  return limits.check_prompt_tokens(req->prompt_token_ids.size());
}

json result_json(const LineResult& r) {
  if (!r.error.ok()) return error_json(r.error);
  if (r.finish == engine::FinishReason::kError) return error_json(r.finish_error);
  json out;
  json ids = json::array();
  for (const auto& t : r.tokens) ids.push_back(t.token_id);
  out["token_ids"] = ids;
  if (r.has_text) out["text"] = r.text;
  out["finish_reason"] = std::string(engine::finish_reason_name(r.finish));
  if (r.want_logprobs) {
    json lps = json::array();
    for (const auto& t : r.tokens) {
      json top = json::array();
      for (const auto& a : t.top) top.push_back({{"token_id", a.token_id}, {"logprob", a.logprob}});
      lps.push_back({{"token_id", t.token_id}, {"logprob", t.logprob}, {"top", top}});
    }
    out["logprobs"] = lps;
  }
  return out;
}

int run_generate(GenerateFlags& f) {
  set_up_logging(f.log_level);
  f.engine.finalize();
  set_json_limits(f.engine.json_limits);
  if (f.engine.model.empty()) {
    // The shipped demo model, with its adapters under their task names unless --adapter is given.
    auto dir = default_model_dir_or_error();
    if (!dir.ok()) {
      spdlog::error("generate: {}", dir.status().message());
      return 2;
    }
    f.engine.model = *dir;
    if (f.adapters.empty()) f.adapters = bundled_adapter_specs(f.engine.model);
    spdlog::info("generate: no --model given; using {} with adapters [{}]", f.engine.model,
                 fmt::join(f.adapters, ", "));
  }
  std::ifstream file;
  std::istream* in = &std::cin;
  if (f.input != "-") {
    file.open(f.input);
    if (!file) {
      spdlog::error("generate: cannot open --input {}", f.input);
      return 2;
    }
    in = &file;
  }
  auto engine = engine::open_engine(f.engine.model, f.engine.backend, f.engine.engine);
  if (!engine.ok()) {
    spdlog::error("{}", engine.status().to_string());
    return 1;
  }
  for (const std::string& spec : f.adapters) {
    auto task_dir = parse_task_dir(spec, "--adapter");
    if (!task_dir.ok()) {
      spdlog::error("generate: {}", task_dir.status().message());
      return 2;
    }
    auto loaded = (*engine)->adapters().load(task_dir->first, task_dir->second, /*replace=*/false);
    if (!loaded.ok()) {
      spdlog::error("--adapter {}: {}", spec, loaded.status().to_string());
      return 1;
    }
  }
  std::vector<std::unique_ptr<LineResult>> results;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(*in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto r = std::make_unique<LineResult>();
    engine::GenerationRequest req;
    r->error = parse_line(line, (*engine)->tokenizer(), (*engine)->options().request_limits, &req,
                          &r->want_logprobs);
    req.params.want_logprob = r->want_logprobs;  // the output line carries logprobs only then
    r->has_text = (*engine)->tokenizer() != nullptr;
    if (r->error.ok()) {
      LineResult* target = r.get();
      req.on_update = [target](const engine::SequenceUpdate& u) {
        target->tokens.insert(target->tokens.end(), u.new_tokens.begin(), u.new_tokens.end());
        target->text += u.new_text;
        if (u.finished) {
          target->done = true;
          target->finish = u.finish_reason;
          target->finish_error = u.error;
        }
      };
      auto id = (*engine)->submit(std::move(req));
      if (!id.ok()) r->error = id.status();
    }
    if (!r->error.ok()) spdlog::warn("input line {}: {}", line_no, r->error.to_string());
    results.push_back(std::move(r));
  }
  spdlog::info("generate: {} requests submitted; running", results.size());
  const auto t0 = std::chrono::steady_clock::now();
  Status st = (*engine)->run_until_idle();
  if (!st.ok()) {
    spdlog::error("{}", st.to_string());
    return 1;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto stats = (*engine)->stats();
  spdlog::info("generate: {} tokens in {} steps, {:.2f} s ({:.1f} tokens/s), {} preemptions",
               stats.tokens_generated, stats.steps, secs,
               static_cast<double>(stats.tokens_generated) / secs, stats.preemptions);
  std::ofstream out_file;
  std::ostream* out = &std::cout;
  if (!f.output.empty()) {
    out_file.open(f.output, std::ios::trunc);
    if (!out_file) {
      spdlog::error("generate: cannot write --output {}", f.output);
      return 1;
    }
    out = &out_file;
  }
  for (const auto& r : results) *out << result_json(*r).dump() << '\n';
  out->flush();
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand(
      "generate", "Run JSON-lines requests through the engine, all in shared steps");
  add_engine_flags(cmd, &flags->engine);
  cmd->add_option("--input", flags->input, "JSON-lines requests ('-': stdin)")
      ->capture_default_str();
  cmd->add_option("--output", flags->output, "Write results here instead of stdout");
  cmd->add_option("--adapter", flags->adapters,
                  "TASK=DIR: serve the PEFT LoRA adapter in DIR under TASK (repeatable)");
  add_log_level_flag(cmd, &flags->log_level);
  cmd->callback([flags, exit_code] { *exit_code = run_generate(*flags); });
}

}  // namespace loraserve::cli
