// Parses a Prometheus text exposition with the independent reference (python3-prometheus-client,
// through tests/server/parse_exposition.py, which also checks the rules that parser lets pass)
// for the metrics tests. Built with LORASERVE_PYTHON naming an interpreter that has the
// package, or empty (the tests that need it skip, and CMake said why).
#pragma once

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "common/status.h"

namespace loraserve::testing {

inline bool have_reference_parser() { return std::string(LORASERVE_PYTHON).size() > 0; }

// {"families": {name: {"type", "help", "samples": [[name, {labels}, value-text]]}}}, or the
// parser's complaint.
inline Result<nlohmann::json> parse_exposition(const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() /
                    fmt::format("loraserve_exposition_{:x}.txt", std::random_device{}());
  std::ofstream(path, std::ios::binary) << text;
  const std::string command =
      fmt::format("{} tests/server/parse_exposition.py {} 2>&1", LORASERVE_PYTHON, path.string());
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return internal_error("cannot run {}", command);
  std::string out;
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  const int rc = pclose(pipe);
  std::filesystem::remove(path);
  if (rc != 0) return invalid_argument_error("the reference parser refused the text: {}", out);
  auto j = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return internal_error("the parser printed no JSON: {}", out);
  return j;
}

// The value of the sample `name` whose labels are exactly `labels`, as the parser read it.
inline std::string sample(const nlohmann::json& parsed, const std::string& family,
                          const std::string& name, const nlohmann::json& labels) {
  const auto& fams = parsed["families"];
  if (!fams.contains(family)) return "(no family " + family + ")";
  for (const auto& s : fams[family]["samples"]) {
    if (s[0] == name && s[1] == labels) return s[2].get<std::string>();
  }
  return "(no sample " + name + labels.dump() + ")";
}

}  // namespace loraserve::testing
