#include "adapters/lora_adapter.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/checked_math.h"
#include "common/excerpt.h"
#include "formats/peft_config.h"
#include "formats/safetensors.h"

namespace loraserve::adapters {

using formats::ModelConfig;
using formats::Projection;

namespace {

// Where one A or B comes from before conversion: memory (`data`), or `file` at `offset` (an
// adapter's safetensors file, of which only the header was read).
struct SourceTensor {
  const void* data = nullptr;
  const ReadOnlyFile* file = nullptr;
  uint64_t offset = 0;
  DType dtype = DType::kF32;
  std::string name;  // for errors
};

struct PendingModule {
  int64_t layer = 0;
  Projection projection = Projection::kQ;
  int32_t rank = 0;
  float scale = 0.0f;
  SourceTensor a, b;
};

std::string module_key(int64_t layer, Projection p) {
  return fmt::format("model.layers.{}.{}.{}", layer, formats::projection_block(p),
                     formats::projection_name(p));
}

// Converts n values of `src` to `dst_dtype` at `dst`, refusing NaN and Inf. A file's values of the
// destination's dtype are read straight into place and checked there; others pass through a
// small buffer, so each byte of the destination is written once and nothing of the tensor's size
// is allocated (fresh pages cost a fault each, which dominated an adapter's load).
Status convert_checked(const SourceTensor& src, size_t n, DType dst_dtype, std::byte* dst) {
  constexpr size_t kChunk = 4096;
  const size_t src_elem = dtype_size(src.dtype);
  const size_t dst_elem = dtype_size(dst_dtype);
  // A file that shrank since its header was read (the admin's doing) is a bad adapter.
  auto read = [&](uint64_t offset, void* to, size_t bytes) {
    Status st = src.file->read_at(offset, to, bytes);
    return st.ok() ? st : invalid_argument_error("{}", st.message());
  };
  const bool in_place = src.file != nullptr && src.dtype == dst_dtype;
  if (in_place) LS_RETURN_IF_ERROR(read(src.offset, dst, n * src_elem));
  std::vector<std::byte> raw(src.file != nullptr && !in_place ? kChunk * src_elem : 0);
  float values[kChunk];
  for (size_t i0 = 0; i0 < n; i0 += kChunk) {
    const size_t m = std::min(kChunk, n - i0);
    const std::byte* from = nullptr;
    if (in_place) {
      from = dst + i0 * dst_elem;
    } else if (src.file != nullptr) {
      LS_RETURN_IF_ERROR(read(src.offset + i0 * src_elem, raw.data(), m * src_elem));
      from = raw.data();
    } else {
      from = static_cast<const std::byte*>(src.data) + i0 * src_elem;
    }
    convert_to_f32(src.dtype, from, values, m);
    for (size_t i = 0; i < m; ++i) {
      if (!std::isfinite(values[i])) {
        return invalid_argument_error("tensor {} holds a non-finite value ({}) at element {}",
                                      excerpt(src.name, kPathExcerptBytes), values[i], i0 + i);
      }
    }
    if (in_place) continue;
    switch (dst_dtype) {
      case DType::kF32:
        std::memcpy(dst + i0 * 4, values, m * 4);
        break;
      case DType::kBF16: {
        auto* d = reinterpret_cast<uint16_t*>(dst) + i0;
        for (size_t i = 0; i < m; ++i) {
          d[i] = f32_to_bf16(values[i]);
          if (!std::isfinite(bf16_to_f32(d[i]))) {  // within half a bf16 step of FLT_MAX
            return invalid_argument_error("tensor {} value {} does not fit in BF16",
                                          excerpt(src.name, kPathExcerptBytes), values[i]);
          }
        }
        break;
      }
      case DType::kF16: {
        auto* d = reinterpret_cast<uint16_t*>(dst) + i0;
        for (size_t i = 0; i < m; ++i) {
          if (std::fabs(values[i]) > 65504.0f) {
            return invalid_argument_error("tensor {} value {} does not fit in F16",
                                          excerpt(src.name, kPathExcerptBytes), values[i]);
          }
          d[i] = f32_to_f16(values[i]);
        }
        break;
      }
      case DType::kI32:
      case DType::kI8:
        return internal_error("adapter weights cannot be stored as {}", dtype_name(dst_dtype));
    }
  }
  return ok_status();
}

}  // namespace

// Lays pending modules out in one host buffer and fills a LoraAdapter.
class AdapterBuilder {
 public:
  static Result<std::shared_ptr<const LoraAdapter>> build(std::vector<PendingModule> pending,
                                                          const ModelConfig& model,
                                                          kernels::Backend* backend,
                                                          int32_t max_rank, double lora_alpha,
                                                          bool use_rslora) {
    if (pending.empty())
      return invalid_argument_error("the adapter targets no module of this model");
    std::shared_ptr<LoraAdapter> adapter(new LoraAdapter());
    // The backend keeps the file's dtype where it can (a BF16 file in BF16 on the CPU loses
    // nothing); a file whose A's and B's differ in dtype counts as F32.
    DType file = pending.front().a.dtype;
    for (const auto& m : pending) {
      if (m.a.dtype != file || m.b.dtype != file) file = DType::kF32;
    }
    adapter->dtype_ = backend->lora_dtype(file);
    adapter->lora_alpha_ = lora_alpha;
    adapter->use_rslora_ = use_rslora;
    adapter->modules_.assign(static_cast<size_t>(num_lora_tables(model)), LoraModule{});
    const size_t elem = dtype_size(adapter->dtype_);
    std::vector<const PendingModule*> by_table(adapter->modules_.size(), nullptr);
    for (const auto& m : pending) {
      if (m.layer < 0 || m.layer >= model.num_layers) {
        return invalid_argument_error("layer {} is outside the model's {} layers", m.layer,
                                      model.num_layers);
      }
      if (m.rank <= 0 || m.rank > max_rank) {
        return invalid_argument_error("{}: rank {} is outside [1, {}] (--max-lora-rank)",
                                      module_key(m.layer, m.projection), m.rank, max_rank);
      }
      by_table[static_cast<size_t>(lora_table(m.layer, m.projection))] = &m;
    }
    // Layout: per layer, the A's of each LoRA group (formats::kLoraGroups) adjacent, so that one
    // GEMM shrinks a group; all B's after. Each group starts on a 64-byte boundary.
    size_t offset = 0;
    auto align = [&] { offset = (offset + 63) / 64 * 64; };
    for (int64_t l = 0; l < model.num_layers; ++l) {
      for (const formats::LoraGroup& group : formats::kLoraGroups) {
        align();
        for (int32_t k = 0; k < group.size; ++k) {
          const PendingModule* m = by_table[static_cast<size_t>(lora_table(l, group.at(k)))];
          if (m == nullptr) continue;
          const auto [out, in] = formats::projection_shape(model, m->projection);
          LoraModule& mod = adapter->modules_[static_cast<size_t>(lora_table(l, m->projection))];
          mod.rank = m->rank;
          mod.scale = m->scale;
          mod.a_offset = offset;
          offset += static_cast<size_t>(m->rank * in) * elem;
        }
      }
    }
    for (size_t t = 0; t < by_table.size(); ++t) {
      const PendingModule* m = by_table[t];
      if (m == nullptr) continue;
      align();
      const auto [out, in] = formats::projection_shape(model, m->projection);
      adapter->modules_[t].b_offset = offset;
      offset += static_cast<size_t>(out * m->rank) * elem;
    }
    LS_ASSIGN_OR_RETURN(adapter->weights_, backend->allocate_host(std::max<size_t>(offset, 64)));
    auto* base = static_cast<std::byte*>(adapter->weights_.data());
    adapter->min_rank_ = std::numeric_limits<int32_t>::max();
    std::vector<bool> targeted(formats::kNumProjections, false);
    for (size_t t = 0; t < by_table.size(); ++t) {
      const PendingModule* m = by_table[t];
      if (m == nullptr) continue;
      const auto [out, in] = formats::projection_shape(model, m->projection);
      const LoraModule& mod = adapter->modules_[t];
      LS_RETURN_IF_ERROR(convert_checked(m->a, static_cast<size_t>(m->rank * in), adapter->dtype_,
                                         base + mod.a_offset));
      LS_RETURN_IF_ERROR(convert_checked(m->b, static_cast<size_t>(out * m->rank), adapter->dtype_,
                                         base + mod.b_offset));
      adapter->max_rank_ = std::max(adapter->max_rank_, m->rank);
      adapter->min_rank_ = std::min(adapter->min_rank_, m->rank);
      adapter->parameter_count_ += static_cast<int64_t>(m->rank) * (in + out);
      targeted[static_cast<size_t>(m->projection)] = true;
    }
    for (Projection p : formats::kAllProjections) {
      if (targeted[static_cast<size_t>(p)])
        adapter->target_modules_.emplace_back(formats::projection_name(p));
    }
    return std::shared_ptr<const LoraAdapter>(std::move(adapter));
  }
};

namespace {

// A tensor name from the file, as messages show it (quoted, cut, escaped).
std::string shown(const std::string& name) { return excerpt(name, kPathExcerptBytes); }

// Splits a PEFT tensor name into (module key, "A" or "B"), or says what is wrong with it.
Status parse_tensor_name(const std::string& name, std::string* key, char* which) {
  static const std::string kPrefix = "base_model.model.";
  if (name.find("lora_embedding_") != std::string::npos) {
    return invalid_argument_error("tensor {}: LoRA on embed_tokens is not supported", shown(name));
  }
  if (!name.starts_with(kPrefix)) {
    return invalid_argument_error(
        "tensor {} is not a PEFT LoRA tensor (expected names like "
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight)",
        shown(name));
  }
  const std::string rest = name.substr(kPrefix.size());
  for (const char* w : {".lora_A.", ".lora_B."}) {
    const auto pos = rest.find(w);
    if (pos == std::string::npos) continue;
    const std::string tail = rest.substr(pos + 8);
    // "weight", or "<adapter name>.weight" as some tools save it.
    if (tail != "weight" && !(tail.ends_with(".weight") && tail.find('.') == tail.size() - 7))
      break;
    *key = rest.substr(0, pos);
    *which = w[6];
    return ok_status();
  }
  if (name.ends_with(".bias"))
    return invalid_argument_error("tensor {}: LoRA bias tensors are not supported", shown(name));
  return invalid_argument_error("unexpected tensor {} in a LoRA adapter", shown(name));
}

// (layer, projection) of a module key such as "model.layers.3.mlp.up_proj".
Status parse_module_key(const std::string& key, const ModelConfig& model, const std::string& tensor,
                        int64_t* layer, Projection* proj) {
  if (key == "lm_head" || key == "model.embed_tokens" || key.ends_with(".lm_head") ||
      key.ends_with("embed_tokens")) {
    return invalid_argument_error("tensor {}: LoRA on {} is not supported", shown(tensor),
                                  key.ends_with("lm_head") ? "lm_head" : "embed_tokens");
  }
  static const std::string kLayers = "model.layers.";
  if (!key.starts_with(kLayers)) {
    return invalid_argument_error("tensor {} targets {}, not a decoder layer", shown(tensor),
                                  shown(key));
  }
  const auto dot = key.find('.', kLayers.size());
  const std::string index =
      dot == std::string::npos ? "" : key.substr(kLayers.size(), dot - kLayers.size());
  // As the model's own module names: "03" names no layer (PEFT would not apply it either).
  if (index.empty() || !std::all_of(index.begin(), index.end(), ::isdigit) || index.size() > 6 ||
      (index.size() > 1 && index[0] == '0')) {
    return invalid_argument_error("tensor {}: cannot read a layer index from {}", shown(tensor),
                                  shown(key));
  }
  *layer = std::stoll(index);
  if (*layer >= model.num_layers) {
    return invalid_argument_error("tensor {} is for layer {}, but the model has {} layers",
                                  shown(tensor), *layer, model.num_layers);
  }
  const std::string module = key.substr(dot + 1);
  for (Projection p : formats::kAllProjections) {
    if (module == fmt::format("{}.{}", formats::projection_block(p), formats::projection_name(p))) {
      *proj = p;
      return ok_status();
    }
  }
  return invalid_argument_error(
      "tensor {} targets {}, which this {} model does not have (LoRA can target q_proj, k_proj, "
      "v_proj, o_proj, gate_proj, up_proj, down_proj)",
      shown(tensor), shown(module), model.architecture_name);
}

// Every listed target must name something in the model (PEFT fails on a target it cannot find).
Status check_targets(const formats::PeftConfig& c, const ModelConfig& model,
                     const std::string& source) {
  std::vector<std::string> keys;
  for (int64_t l = 0; l < model.num_layers; ++l) {
    for (Projection p : formats::kAllProjections) keys.push_back(module_key(l, p));
  }
  auto names_unsupported = [](const std::string& s) -> const char* {
    if (s == "lm_head" || s.ends_with(".lm_head")) return "lm_head";
    if (s == "embed_tokens" || s.ends_with(".embed_tokens")) return "embed_tokens";
    return nullptr;
  };
  if (c.target_modules_regex) {
    for (const char* k : {"lm_head", "model.embed_tokens"}) {
      LS_ASSIGN_OR_RETURN(bool m, c.target_modules_regex->match(k).with_context(source));
      if (m) {
        return invalid_argument_error("{}: target_modules matches {}; LoRA on it is not supported",
                                      source, k);
      }
    }
    bool any = false;
    for (const auto& k : keys) {
      LS_ASSIGN_OR_RETURN(bool m, c.target_modules_regex->match(k).with_context(source));
      any = any || m;
    }
    if (!any) {
      return invalid_argument_error(
          "{}: target_modules regex {} matches no module of this model (e.g. {})", source,
          excerpt(c.target_modules_regex->pattern()), keys.front());
    }
    return ok_status();
  }
  for (const auto& t : c.target_modules) {
    if (const char* u = names_unsupported(t)) {
      return invalid_argument_error("{}: target_modules names {}; LoRA on it is not supported",
                                    source, u);
    }
    if (t == "all-linear") continue;
    const bool exists = std::any_of(keys.begin(), keys.end(), [&](const std::string& k) {
      return k == t || k.ends_with("." + t);
    });
    if (!exists) {
      return invalid_argument_error(
          "{}: target module {} does not exist in this {} model (LoRA can target q_proj, k_proj, "
          "v_proj, o_proj, gate_proj, up_proj, down_proj)",
          source, shown(t), model.architecture_name);
    }
  }
  if (c.layers_to_transform) {
    for (int64_t l : *c.layers_to_transform) {
      if (l >= model.num_layers) {
        return invalid_argument_error(
            "{}: layers_to_transform names layer {}, but the model has {} layers", source, l,
            model.num_layers);
      }
    }
  }
  return ok_status();
}

// The largest adapter_model.safetensors an adapter of `model` with ranks up to `max_rank` can
// be: F32 A and B for every projection of every layer, and the largest header. A larger file
// cannot be valid and is refused before it is read.
uint64_t max_adapter_file_bytes(const ModelConfig& model, int32_t max_rank) {
  uint64_t per_layer = 0;
  for (Projection p : formats::kAllProjections) {
    const auto [out, in] = formats::projection_shape(model, p);
    per_layer += static_cast<uint64_t>(out + in);  // each below 2^31 (hf_config checks)
  }
  const auto weights = checked_product<uint64_t>(
      {per_layer, static_cast<uint64_t>(model.num_layers), static_cast<uint64_t>(max_rank), 4});
  const auto total = weights
                         ? checked_add<uint64_t>(*weights, 8 + formats::kMaxSafetensorsHeaderBytes)
                         : std::nullopt;
  return total.value_or(UINT64_MAX);
}

}  // namespace

Result<std::shared_ptr<const LoraAdapter>> LoraAdapter::load(const std::string& dir,
                                                             const ModelConfig& model,
                                                             kernels::Backend* backend,
                                                             int32_t max_rank) {
  auto folder = Folder::open(dir);
  if (!folder.ok()) {
    if (folder.status().code() == StatusCode::kNotFound)
      return not_found_error("adapter folder {} does not exist", shown_path(dir));
    return folder.status();
  }
  return load(*folder, model, backend, max_rank);
}

Result<std::shared_ptr<const LoraAdapter>> LoraAdapter::load(
    const Folder& dir, const ModelConfig& model, kernels::Backend* backend, int32_t max_rank,
    const std::function<Status()>& keep_going) {
  const auto start = std::chrono::steady_clock::now();
  LS_ASSIGN_OR_RETURN(formats::PeftConfig config, formats::load_peft_config(dir));
  const std::string config_path = dir.file_name("adapter_config.json");
  if (!dir.has("adapter_model.safetensors")) {
    if (dir.has("adapter_model.bin")) {
      return invalid_argument_error(
          "{}: no adapter_model.safetensors, only adapter_model.bin: a Python pickle, which "
          "loraserve never unpickles (it can run arbitrary code). Save the adapter with "
          "safetensors (PEFT's save_pretrained does by default)",
          dir.name());
    }
    return not_found_error("{}: missing adapter_model.safetensors", dir.name());
  }
  LS_RETURN_IF_ERROR(check_targets(config, model, config_path));
  LS_ASSIGN_OR_RETURN(const ReadOnlyFile weights_file, dir.open_file("adapter_model.safetensors"));
  const std::string& weights_path = weights_file.name();
  // Only the header is read here; each tensor is read into its place in the adapter's buffer
  // below. Not mapped: the file is the admin's to change while it is served.
  formats::SafetensorsReadOptions read_options;
  read_options.map = false;
  read_options.max_file_bytes = max_adapter_file_bytes(model, max_rank);
  LS_ASSIGN_OR_RETURN(auto store, formats::TensorStore::open_file(weights_file, read_options));

  // Index the file's tensors by (layer, projection).
  std::vector<const formats::TensorInfo*> a_of(static_cast<size_t>(num_lora_tables(model)),
                                               nullptr);
  std::vector<const formats::TensorInfo*> b_of(a_of.size(), nullptr);
  for (const std::string& name : store->names()) {
    std::string key;
    char which = 0;
    LS_RETURN_IF_ERROR(parse_tensor_name(name, &key, &which).with_context(weights_path));
    int64_t layer = 0;
    Projection proj{};
    LS_RETURN_IF_ERROR(
        parse_module_key(key, model, name, &layer, &proj).with_context(weights_path));
    auto& slot = (which == 'A' ? a_of : b_of)[static_cast<size_t>(lora_table(layer, proj))];
    if (slot != nullptr) {
      return invalid_argument_error("{}: two tensors for {} lora_{}", weights_path, shown(key),
                                    which);
    }
    slot = store->find(name);
  }

  std::vector<PendingModule> pending;
  for (int64_t l = 0; l < model.num_layers; ++l) {
    for (Projection p : formats::kAllProjections) {
      const std::string key = module_key(l, p);
      const size_t t = static_cast<size_t>(lora_table(l, p));
      if (keep_going) LS_RETURN_IF_ERROR(keep_going());
      if (std::chrono::steady_clock::now() - start > kPatternTimeBudget) {
        return invalid_argument_error(
            "{}: matching its target_modules, rank_pattern and alpha_pattern against the model's "
            "modules took over {} s; simplify the patterns",
            config_path, kPatternTimeBudget.count());
      }
      LS_ASSIGN_OR_RETURN(bool targeted,
                          formats::peft_targets(config, key).with_context(config_path));
      const formats::TensorInfo* a = a_of[t];
      const formats::TensorInfo* b = b_of[t];
      if (!targeted) {
        if (a != nullptr || b != nullptr) {
          return invalid_argument_error(
              "{}: tensor {} is for {}, which adapter_config.json does not target", weights_path,
              shown((a ? a : b)->name), key);
        }
        continue;
      }
      if (a == nullptr || b == nullptr) {
        // The file is malformed (it lacks what its own config promises), not absent.
        return invalid_argument_error(
            "{}: missing tensor base_model.model.{}.lora_{}.weight (adapter_config.json targets "
            "{})",
            weights_path, key, a == nullptr ? 'A' : 'B', key);
      }
      LS_ASSIGN_OR_RETURN(auto ra,
                          formats::peft_rank_and_alpha(config, key).with_context(config_path));
      const auto [rank, alpha] = ra;
      const auto [out, in] = formats::projection_shape(model, p);
      if (a->shape.size() != 2 || b->shape.size() != 2) {
        return invalid_argument_error("{}: LoRA tensors of {} must be 2-D, got {} and {}",
                                      weights_path, key, a->shape_string(), b->shape_string());
      }
      if (a->shape[0] != b->shape[1]) {
        return invalid_argument_error(
            "{}: rank mismatch for {}: lora_A is {} (rank {}) but lora_B is {} (rank {})",
            weights_path, key, a->shape_string(), a->shape[0], b->shape_string(), b->shape[1]);
      }
      if (a->shape[0] != rank) {
        return invalid_argument_error(
            "{}: {} has rank {} but adapter_config.json gives r = {} for it", weights_path, key,
            a->shape[0], rank);
      }
      if (a->shape[1] != in || b->shape[0] != out) {
        return invalid_argument_error(
            "{}: {} lora_A {} and lora_B {} do not fit the base model's {} x {} weight (expected "
            "[{}, {}] and [{}, {}])",
            weights_path, key, a->shape_string(), b->shape_string(), out, in, rank, in, out, rank);
      }
      if (rank > max_rank) {
        return invalid_argument_error(
            "{}: {} has rank {}, above the server's maximum LoRA rank {} (--max-lora-rank)",
            weights_path, key, rank, max_rank);
      }
      for (const auto* t2 : {a, b}) {
        if (!t2->dtype || *t2->dtype == DType::kI32) {
          return invalid_argument_error("{}: tensor {} has dtype {}; expected F32, F16 or BF16",
                                        weights_path, shown(t2->name), excerpt(t2->dtype_name));
        }
      }
      const double scale = formats::peft_scale(config, rank, alpha);
      if (!std::isfinite(static_cast<float>(scale))) {
        return invalid_argument_error(
            "{}: lora_alpha {} with r = {} gives {} a LoRA scale of {}, beyond the float range",
            config_path, alpha, rank, key, scale);
      }
      PendingModule m;
      m.layer = l;
      m.projection = p;
      m.rank = static_cast<int32_t>(rank);
      m.scale = static_cast<float>(scale);
      m.a = {nullptr, &weights_file, a->offset, *a->dtype, a->name};
      m.b = {nullptr, &weights_file, b->offset, *b->dtype, b->name};
      pending.push_back(m);
    }
  }
  auto adapter = AdapterBuilder::build(std::move(pending), model, backend, max_rank,
                                       config.lora_alpha, config.use_rslora);
  if (!adapter.ok()) return adapter.status().with_context(weights_path);
  return adapter;
}

Result<std::shared_ptr<const LoraAdapter>> LoraAdapter::from_weights(
    const std::vector<LoraModuleWeights>& modules, const ModelConfig& model,
    kernels::Backend* backend, int32_t max_rank) {
  std::vector<PendingModule> pending;
  for (const auto& w : modules) {
    const auto [out, in] = formats::projection_shape(model, w.projection);
    const std::string key = module_key(w.layer, w.projection);
    if (static_cast<int64_t>(w.a.size()) != w.rank * in ||
        static_cast<int64_t>(w.b.size()) != out * w.rank) {
      return invalid_argument_error("{}: A has {} and B {} values; rank {} needs {} and {}", key,
                                    w.a.size(), w.b.size(), w.rank, w.rank * in, out * w.rank);
    }
    PendingModule m;
    m.layer = w.layer;
    m.projection = w.projection;
    m.rank = w.rank;
    m.scale = w.scale;
    m.a = {w.a.data(), nullptr, 0, DType::kF32, key + ".lora_A"};
    m.b = {w.b.data(), nullptr, 0, DType::kF32, key + ".lora_B"};
    pending.push_back(m);
  }
  return AdapterBuilder::build(std::move(pending), model, backend, max_rank, 0.0, false);
}

}  // namespace loraserve::adapters
