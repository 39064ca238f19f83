// Writes PEFT adapter folders for tests: a valid all-projection adapter for a model config, and
// the hooks to break it one way at a time (bad config fields, wrong shapes, NaN, missing files).
#pragma once

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "adapters/lora_adapter.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"

namespace loraserve::testing {

struct AdapterSpec {
  nlohmann::ordered_json config;  // adapter_config.json
  // Tensor name → (shape, f32 values).
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> tensors;
};

inline std::string peft_name(int64_t layer, formats::Projection p, char which) {
  return fmt::format("base_model.model.model.layers.{}.{}.{}.lora_{}.weight", layer,
                     formats::projection_block(p), formats::projection_name(p), which);
}

// A valid rank-`r` adapter on every projection of every layer, random values of scale `scale`.
inline AdapterSpec make_adapter_spec(const formats::ModelConfig& c, int64_t r, uint32_t seed,
                                     float scale = 0.1f) {
  AdapterSpec s;
  s.config = {{"peft_type", "LORA"},
              {"task_type", "CAUSAL_LM"},
              {"r", r},
              {"lora_alpha", 2 * r},
              {"target_modules",
               {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}},
              {"bias", "none"},
              {"use_rslora", false},
              {"use_dora", false},
              {"modules_to_save", nullptr},
              {"fan_in_fan_out", false},
              {"lora_dropout", 0.0}};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (formats::Projection p : formats::kAllProjections) {
      const auto [out, in] = formats::projection_shape(c, p);
      std::vector<float> a(static_cast<size_t>(r * in)), b(static_cast<size_t>(out * r));
      for (auto& v : a) v = u(rng);
      for (auto& v : b) v = u(rng);
      s.tensors[peft_name(l, p, 'A')] = {{r, in}, a};
      s.tensors[peft_name(l, p, 'B')] = {{out, r}, b};
    }
  }
  return s;
}

// An adapter built in memory: rank `rank` on q_proj of layer 0 only, every weight `value`.
inline std::shared_ptr<const adapters::LoraAdapter> q_only_adapter(const formats::ModelConfig& c,
                                                                   kernels::Backend* backend,
                                                                   int32_t rank, float value) {
  adapters::LoraModuleWeights w;
  w.layer = 0;
  w.projection = formats::Projection::kQ;
  w.rank = rank;
  w.a.assign(static_cast<size_t>(rank * c.hidden_size), value);
  w.b.assign(static_cast<size_t>(c.q_dim() * rank), value);
  auto a = adapters::LoraAdapter::from_weights({w}, c, backend, 64);
  return a.ok() ? *a : nullptr;
}

// Writes `s` as a PEFT folder; the tensors in `dtype` ("F32", or "BF16"/"F16": each value rounded
// to nearest even, NaN and Inf kept).
inline void write_adapter(const AdapterSpec& s, const std::filesystem::path& dir,
                          const std::string& dtype = "F32") {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "adapter_config.json") << s.config.dump(2);
  std::vector<formats::TensorToWrite> out;
  std::vector<std::vector<uint16_t>> halves;
  halves.reserve(s.tensors.size());
  for (const auto& [name, t] : s.tensors) {
    if (dtype == "F32") {
      out.push_back({name, "F32", t.first, t.second.data(), t.second.size() * 4});
      continue;
    }
    auto& h = halves.emplace_back(t.second.size());
    for (size_t i = 0; i < h.size(); ++i)
      h[i] = dtype == "BF16" ? f32_to_bf16(t.second[i]) : f32_to_f16(t.second[i]);
    out.push_back({name, dtype, t.first, h.data(), h.size() * 2});
  }
  (void)formats::write_safetensors((dir / "adapter_model.safetensors").string(), out);
}

// A fresh empty folder under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / fmt::format("loraserve_test_{:x}", rd());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace loraserve::testing
