// Bounds on rendering one chat template, so that a hostile template or conversation ends in an
// error naming the bound instead of a hang, a crash or unbounded memory.
#pragma once

#include <cstddef>
#include <cstdint>

namespace loraserve::chat {

struct RenderLimits {
  // Any string a render builds, the output included.
  size_t max_string_bytes = 8u << 20;
  // Evaluation steps: nodes evaluated, loop iterations, elements copied, 64-byte blocks of text
  // scanned. The Llama 3, Gemma 3, DeepSeek V3 and Qwen 3 templates take 30-65 per message, so
  // the default fits conversations of 150,000 messages; it is about a second of CPU.
  uint64_t max_steps = 10'000'000;
  // Nested macro, caller and recursive-loop calls.
  int max_call_depth = 64;
};

}  // namespace loraserve::chat
