#include "cli/tokenize_command.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/common_flags.h"
#include "cli/json_lines.h"
#include "tokenizer/tokenizer.h"

namespace loraserve::cli {
namespace {

using nlohmann::json;

struct TokenizeFlags {
  std::string model;
  std::string tokenizer;
  bool decode = false;
  std::string input = "-";
  std::string log_level = "warn";
  JsonLimits json_limits;
};

Result<bool> optional_bool(const json& line, const char* key, bool fallback) {
  auto it = line.find(key);
  if (it == line.end()) return fallback;
  if (!it->is_boolean()) return invalid_argument_error("field '{}' must be true or false", key);
  return it->get<bool>();
}

Status check_fields(const json& line, std::initializer_list<std::string_view> known) {
  for (auto it = line.begin(); it != line.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) == known.end()) {
      return unknown_field_error(it.key());
    }
  }
  return ok_status();
}

// {"text": "...", "add_special_tokens": true} -> {"ids": [...]}
Result<json> encode_line(const tokenizer::Tokenizer& tok, const json& line) {
  LS_RETURN_IF_ERROR(check_fields(line, {"text", "add_special_tokens"}));
  auto text = line.find("text");
  if (text == line.end()) return invalid_argument_error("missing field 'text'");
  if (!text->is_string()) return invalid_argument_error("field 'text' must be a string");
  LS_ASSIGN_OR_RETURN(bool add_special, optional_bool(line, "add_special_tokens", true));
  LS_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                      tok.encode(text->get_ref<const std::string&>(), add_special));
  return json{{"ids", ids}};
}

// {"ids": [...], "skip_special_tokens": true} -> {"text": "..."}
Result<json> decode_line(const tokenizer::Tokenizer& tok, const json& line) {
  LS_RETURN_IF_ERROR(check_fields(line, {"ids", "skip_special_tokens"}));
  auto ids_field = line.find("ids");
  if (ids_field == line.end()) return invalid_argument_error("missing field 'ids'");
  LS_ASSIGN_OR_RETURN(const std::vector<int32_t> ids, token_id_list(*ids_field, "ids"));
  LS_ASSIGN_OR_RETURN(bool skip, optional_bool(line, "skip_special_tokens", true));
  LS_ASSIGN_OR_RETURN(std::string text, tok.decode(ids, skip));
  return json{{"text", text}};
}

Result<json> handle_line(const tokenizer::Tokenizer& tok, const std::string& line, bool decode) {
  LS_ASSIGN_OR_RETURN(const json request, parse_object_line(line));
  return decode ? decode_line(tok, request) : encode_line(tok, request);
}

Result<std::string> tokenizer_path(const TokenizeFlags& f) {
  if (f.model.empty() == f.tokenizer.empty()) {
    return invalid_argument_error("give exactly one of --model DIR and --tokenizer FILE");
  }
  if (!f.tokenizer.empty()) return f.tokenizer;
  const std::filesystem::path path = std::filesystem::path(f.model) / "tokenizer.json";
  if (!std::filesystem::exists(path)) {
    return not_found_error("--model {}: the folder has no tokenizer.json", f.model);
  }
  return path.string();
}

int run_tokenize(const TokenizeFlags& f) {
  set_up_logging(f.log_level);
  set_json_limits(f.json_limits);
  auto path = tokenizer_path(f);
  if (!path.ok()) {
    spdlog::error("tokenize: {}", path.status().to_string());
    return 2;
  }
  auto tok = tokenizer::Tokenizer::from_file(*path);
  if (!tok.ok()) {
    spdlog::error("tokenize: {}", tok.status().to_string());
    return 1;
  }
  std::ifstream file;
  std::istream* in = &std::cin;
  if (f.input != "-") {
    file.open(f.input);
    if (!file) {
      spdlog::error("tokenize: cannot open --input {}", f.input);
      return 2;
    }
    in = &file;
  }
  std::string line;
  int64_t line_no = 0;
  while (std::getline(*in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Result<json> out = handle_line(**tok, line, f.decode);
    if (!out.ok()) spdlog::warn("input line {}: {}", line_no, out.status().to_string());
    const json& result = out.ok() ? *out : error_json(out.status());
    std::cout << result.dump(-1, ' ', false, json::error_handler_t::replace) << '\n' << std::flush;
  }
  return 0;
}

}  // namespace

void add_tokenize_command(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<TokenizeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize", "Encode {\"text\"} JSON lines to {\"ids\"} (or --decode the reverse)");
  cmd->add_option("--model", flags->model, "Model folder whose tokenizer.json to use");
  cmd->add_option("--tokenizer", flags->tokenizer, "A tokenizer.json file");
  cmd->add_flag("--decode", flags->decode, "Read {\"ids\": [...]} lines and print {\"text\"}");
  cmd->add_option("--input", flags->input, "JSON-lines input ('-': stdin)")->capture_default_str();
  add_json_limit_flags(cmd, &flags->json_limits);
  add_log_level_flag(cmd, &flags->log_level);
  cmd->callback([flags, exit_code] { *exit_code = run_tokenize(*flags); });
}

}  // namespace loraserve::cli
