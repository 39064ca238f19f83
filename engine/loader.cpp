#include "engine/loader.h"

#include <spdlog/spdlog.h>

#include "common/untrusted_file.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"

namespace loraserve::engine {

Result<std::unique_ptr<Engine>> open_engine(const std::string& model_dir,
                                            const kernels::BackendOptions& backend_options,
                                            const EngineOptions& engine_options) {
  auto folder = Folder::open(model_dir);
  if (!folder.ok()) {
    if (folder.status().code() == StatusCode::kNotFound)
      return not_found_error("model folder {} does not exist", shown_path(model_dir));
    return folder.status();
  }
  LS_ASSIGN_OR_RETURN(formats::ModelConfig config, formats::load_model_config(*folder));
  spdlog::info(
      "model {}: {} ({} layers, hidden {}, {} heads / {} KV heads, head_dim {}, vocab {}, context "
      "{})",
      folder->name(), config.architecture_name, config.num_layers, config.hidden_size,
      config.num_heads, config.num_kv_heads, config.head_dim, config.vocab_size,
      config.max_context);
  LS_ASSIGN_OR_RETURN(auto store, formats::TensorStore::open_folder(*folder, "model.safetensors"));
  kernels::BackendOptions options = backend_options;
  if (parse_dtype(config.torch_dtype) == DType::kF16) options.cuda_dtype = DType::kF16;
  LS_ASSIGN_OR_RETURN(auto backend, kernels::create_backend(options));
  std::unique_ptr<tokenizer::Tokenizer> tok;
  if (folder->has("tokenizer.json")) {
    LS_ASSIGN_OR_RETURN(const ReadOnlyFile tokenizer_file, folder->open_file("tokenizer.json"));
    LS_ASSIGN_OR_RETURN(tok, tokenizer::Tokenizer::from_file(tokenizer_file));
    if (tok->vocab_size() > config.vocab_size) {
      spdlog::warn(
          "{} has {} tokens, more than the model's vocab_size {}: prompts that use the extra ids "
          "are refused",
          tokenizer_file.name(), tok->vocab_size(), config.vocab_size);
    }
  } else {
    spdlog::warn("model {} has no tokenizer.json: only token-id prompts are served",
                 folder->name());
  }
  auto source = checkpoint_source(std::move(store));
  return Engine::create(config, *source, std::move(backend), engine_options, std::move(tok));
}

}  // namespace loraserve::engine
