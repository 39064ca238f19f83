// Shared by the fuzz targets: the oracle every error must pass (short, one printable line of
// valid UTF-8, so no input is ever echoed unbounded or raw), the tokenizers the tokenizer targets
// run on, and a crash that names the broken property. Not thread-safe (fuzz targets run one input
// at a time).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "tokenizer/tokenizer.h"

namespace loraserve::fuzz {

// Longest message a Status may carry: excerpts are bounded, so anything longer echoes input.
inline constexpr size_t kMaxMessageBytes = 2048;

// Reports a broken property and aborts, so libFuzzer saves the input.
[[noreturn]] inline void fail(std::string_view what, std::string_view detail = "") {
  std::fprintf(stderr, "fuzz property broken: %.*s\n%.*s\n", static_cast<int>(what.size()),
               what.data(), static_cast<int>(detail.size() > 4000 ? 4000 : detail.size()),
               detail.data());
  std::abort();
}

// Whether `s` is valid UTF-8 (RFC 3629).
bool is_valid_utf8(std::string_view s);

// An error must be short, on one line, free of control characters and valid UTF-8.
void check_status(const Status& status);

// The tokenizers the tokenizer targets run on: models/demo/tokenizer.json, plus every file named
// in $LORASERVE_FUZZ_TOKENIZERS (colon-separated; e.g. real Llama 3 or Gemma tokenizer.json files
// for long runs). Loaded once.
const std::vector<std::unique_ptr<tokenizer::Tokenizer>>& fuzz_tokenizers();

}  // namespace loraserve::fuzz
