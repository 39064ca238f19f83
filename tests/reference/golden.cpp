#include "tests/reference/golden.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "formats/safetensors.h"

namespace loraserve::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

template <typename T>
Result<std::vector<T>> list_field(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_array())
    return invalid_argument_error("{}: field '{}' is missing or not a list", where, key);
  std::vector<T> out;
  for (const json& v : j[key]) {
    if (!v.is_number()) return invalid_argument_error("{}: '{}' holds a non-number", where, key);
    out.push_back(v.get<T>());
  }
  return out;
}

}  // namespace

double top2_gap(const std::vector<float>& logits) {
  float first = -INFINITY, second = -INFINITY;
  for (float v : logits) {
    if (v > first) {
      second = first;
      first = v;
    } else if (v > second) {
      second = v;
    }
  }
  return static_cast<double>(first) - static_cast<double>(second);
}

std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(kFixturesDir, ec)) {
    if (entry.is_directory() && fs::exists(entry.path() / "golden.json"))
      names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

Result<GoldenFixture> load_golden(const std::string& name) {
  GoldenFixture fixture;
  fixture.name = name;
  fixture.model_dir = (fs::path(kFixturesDir) / name).string();
  const std::string json_path = fixture.model_dir + "/golden.json";
  std::ifstream in(json_path);
  if (!in) return not_found_error("{}: cannot open", json_path);
  const json golden = json::parse(in, nullptr, false);
  if (golden.is_discarded() || !golden.contains("cases") || !golden["cases"].is_array())
    return invalid_argument_error("{}: not a JSON object with a 'cases' list", json_path);
  fixture.min_top2_gap = golden.value("min_top2_gap", 0.0);
  LS_ASSIGN_OR_RETURN(auto logits_file,
                      formats::SafetensorsFile::open(fixture.model_dir + "/golden.safetensors"));
  for (const json& c : golden["cases"]) {
    GoldenCase gc;
    gc.name = c.value("name", "");
    const std::string where = json_path + " case '" + gc.name + "'";
    if (c.contains("adapter") && c["adapter"].is_string())
      gc.adapter = c["adapter"].get<std::string>();
    LS_ASSIGN_OR_RETURN(gc.prompt_token_ids, list_field<int32_t>(c, "prompt_token_ids", where));
    LS_ASSIGN_OR_RETURN(gc.expected.token_ids, list_field<int32_t>(c, "greedy_token_ids", where));
    LS_ASSIGN_OR_RETURN(gc.expected.top2_gap, list_field<double>(c, "top2_gap", where));
    LS_ASSIGN_OR_RETURN(gc.expected.logprobs, list_field<double>(c, "logprobs", where));
    const size_t steps = gc.expected.token_ids.size();
    if (gc.expected.top2_gap.size() != steps || gc.expected.logprobs.size() != steps)
      return invalid_argument_error("{}: lists of different lengths", where);
    const formats::TensorInfo* t = logits_file->find(gc.name + ".logits");
    if (t == nullptr || t->shape.size() != 2 || static_cast<size_t>(t->shape[0]) != steps)
      return not_found_error("{}: golden.safetensors lacks '{}.logits' [{}, vocab]", where, gc.name,
                             steps);
    std::vector<float> all(static_cast<size_t>(t->numel()));
    LS_RETURN_IF_ERROR(formats::read_as_f32(*t, all.data()));
    const auto vocab = static_cast<size_t>(t->shape[1]);
    for (size_t s = 0; s < steps; ++s) {
      gc.expected.logits.emplace_back(all.begin() + static_cast<std::ptrdiff_t>(s * vocab),
                                      all.begin() + static_cast<std::ptrdiff_t>((s + 1) * vocab));
    }
    fixture.cases.push_back(std::move(gc));
  }
  return fixture;
}

Comparison compare_traces(const Trace& ref, const Trace& got, double epsilon) {
  Comparison c;
  if (ref.top2_gap.size() != ref.steps() || got.logprobs.size() != got.steps()) {
    c.mismatch = "a trace lacks top-2 gaps or logprobs (run it with return_logits)";
    return c;
  }
  for (size_t i = 0; i < ref.steps(); ++i) {
    if (i >= got.steps()) {
      c.mismatch = fmt::format("stopped after {} of {} steps", got.steps(), ref.steps());
      return c;
    }
    if (i < got.logits.size() && i < ref.logits.size()) {
      const auto& a = ref.logits[i];
      const auto& b = got.logits[i];
      if (a.size() != b.size()) {
        c.mismatch = fmt::format("step {}: {} logits, reference has {}", i, b.size(), a.size());
        return c;
      }
      for (size_t v = 0; v < a.size(); ++v) {
        c.max_logit_diff = std::max(
            c.max_logit_diff, std::abs(static_cast<double>(a[v]) - static_cast<double>(b[v])));
      }
      ++c.compared_logits;
    }
    if (ref.top2_gap[i] < epsilon) {
      c.near_tie = true;
      return c;
    }
    if (got.token_ids[i] != ref.token_ids[i]) {
      c.mismatch = fmt::format("step {}: token {}, reference {} (reference top-2 gap {:.4g})", i,
                               got.token_ids[i], ref.token_ids[i], ref.top2_gap[i]);
      return c;
    }
    c.max_logprob_diff = std::max(c.max_logprob_diff, std::abs(got.logprobs[i] - ref.logprobs[i]));
    ++c.compared_tokens;
  }
  return c;
}

}  // namespace loraserve::testing
