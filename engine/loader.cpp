#include "engine/loader.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "formats/hf_config.h"
#include "formats/safetensors.h"

namespace loraserve::engine {

Result<std::unique_ptr<Engine>> open_engine(const std::string& model_dir,
                                            const kernels::BackendOptions& backend_options,
                                            const EngineOptions& engine_options) {
  LS_ASSIGN_OR_RETURN(formats::ModelConfig config, formats::load_model_config(model_dir));
  spdlog::info(
      "model {}: {} ({} layers, hidden {}, {} heads / {} KV heads, head_dim {}, vocab {}, context "
      "{})",
      model_dir, config.architecture_name, config.num_layers, config.hidden_size, config.num_heads,
      config.num_kv_heads, config.head_dim, config.vocab_size, config.max_context);
  LS_ASSIGN_OR_RETURN(auto store,
                      formats::TensorStore::open_folder(model_dir, "model.safetensors"));
  kernels::BackendOptions options = backend_options;
  if (parse_dtype(config.torch_dtype) == DType::kF16) options.cuda_dtype = DType::kF16;
  LS_ASSIGN_OR_RETURN(auto backend, kernels::create_backend(options));
  std::unique_ptr<tokenizer::Tokenizer> tok;
  const std::string tokenizer_path = model_dir + "/tokenizer.json";
  if (std::filesystem::exists(tokenizer_path)) {
    LS_ASSIGN_OR_RETURN(tok, tokenizer::Tokenizer::from_file(tokenizer_path));
    if (tok->vocab_size() > config.vocab_size) {
      spdlog::warn("{} has {} tokens, more than the model's vocab_size {}: prompts that use the extra ids are refused",
                   tokenizer_path, tok->vocab_size(), config.vocab_size);
    }
  } else {
    spdlog::warn("model {} has no tokenizer.json: only token-id prompts are served", model_dir);
  }
  auto source = checkpoint_source(std::move(store));
  return Engine::create(config, *source, std::move(backend), engine_options, std::move(tok));
}

}  // namespace loraserve::engine
