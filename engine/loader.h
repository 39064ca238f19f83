// Opens a Hugging Face model folder into a ready Engine: config, weights, backend.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "engine/engine.h"
#include "kernels/backend.h"

namespace loraserve::engine {

Result<std::unique_ptr<Engine>> open_engine(const std::string& model_dir,
                                            const kernels::BackendOptions& backend_options,
                                            const EngineOptions& engine_options);

}  // namespace loraserve::engine
