#include "engine/loader.h"

#include <spdlog/spdlog.h>

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
  LS_ASSIGN_OR_RETURN(auto backend, kernels::create_backend(backend_options));
  auto source = checkpoint_source(std::move(store));
  return Engine::create(config, *source, std::move(backend), engine_options);
}

}  // namespace loraserve::engine
