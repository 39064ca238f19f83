// Fuzzes adapter_config.json parsing and PEFT's matching rules: an accepted config is matched
// against every module of a small model, and each match, rank and scale is computed; every
// error is a short, clean message.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "formats/hf_config.h"
#include "formats/peft_config.h"
#include "fuzz/fuzz_util.h"

using namespace loraserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = formats::parse_peft_config(text, "adapter_config.json");
  if (!config.ok()) {
    fuzz::check_status(config.status());
    return 0;
  }
  if (config->r <= 0 || !std::isfinite(config->lora_alpha)) fuzz::fail("accepted r or alpha");
  for (int layer = 0; layer < 3; ++layer) {
    for (formats::Projection p : formats::kAllProjections) {
      const std::string key = "model.layers." + std::to_string(layer) + "." +
                              std::string(formats::projection_block(p)) + "." +
                              std::string(formats::projection_name(p));
      auto targeted = formats::peft_targets(*config, key);
      if (!targeted.ok()) {
        fuzz::check_status(targeted.status());
        continue;
      }
      auto ra = formats::peft_rank_and_alpha(*config, key);
      if (!ra.ok()) {
        fuzz::check_status(ra.status());
        continue;
      }
      if (ra->first <= 0 || !std::isfinite(ra->second)) fuzz::fail("a pattern gave a bad rank");
      (void)formats::peft_scale(*config, ra->first, ra->second);
    }
  }
  return 0;
}
