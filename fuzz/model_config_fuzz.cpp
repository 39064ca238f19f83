// Fuzzes config.json and generation_config.json parsing. The input is config.json, then
// optionally a NUL byte and generation_config.json. An accepted config has sizes that multiply
// without overflow and token ids inside its vocabulary.
#include <cstddef>
#include <cstdint>
#include <string>

#include "formats/hf_config.h"
#include "fuzz/fuzz_util.h"

using namespace loraserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string config_text = input.substr(0, nul);
  auto config = formats::parse_model_config(config_text, "config.json");
  if (!config.ok()) {
    fuzz::check_status(config.status());
    return 0;
  }
  formats::ModelConfig& c = *config;
  if (c.parameter_count() <= 0) fuzz::fail("an accepted config has no parameter count");
  if (c.max_context <= 0 || c.max_context > c.max_position_embeddings)
    fuzz::fail("max_context out of range");
  if (nul != std::string::npos) {
    const formats::ModelConfig before = c;
    Status st =
        formats::merge_generation_config(input.substr(nul + 1), "generation_config.json", &c);
    fuzz::check_status(st);
    if (!st.ok() && c.eos_token_ids != before.eos_token_ids)
      fuzz::fail("a failed generation_config merge changed the config");
  }
  for (int32_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) fuzz::fail("an eos id outside the vocabulary");
  }
  if (c.bos_token_id >= c.vocab_size) fuzz::fail("bos id outside the vocabulary");
  return 0;
}
