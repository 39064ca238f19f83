// Decoders: token strings back to text, as tokenizer.json's "decoder" chain says (ByteLevel,
// Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence; none: tokens joined by spaces).
// Decoding can run on a part of a sequence: start-of-text rules (Strip's start, Metaspace's
// first token) apply only `at_start`, end-of-text rules (Strip's stop) only `at_end`; the
// incremental decoder relies on this. Immutable; thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "tokenizer/json_fields.h"

namespace loraserve::tokenizer {

class DecoderStep {
 public:
  virtual ~DecoderStep() = default;
  virtual Status apply(std::vector<std::string>* tokens, bool at_start, bool at_end) const = 0;
};

class Decoder {
 public:
  // `config` is tokenizer.json's "decoder" (null: join with spaces); `path` names it in errors.
  static Result<std::unique_ptr<Decoder>> from_json(const json& config, const std::string& path);

  // Fails only when a Replace pattern exceeds PCRE2's matching limits.
  Result<std::string> decode(std::vector<std::string> tokens, bool at_start = true,
                             bool at_end = true) const;

  // What the incremental decoder must know to cut a sequence into independently decoded runs.
  // True when ByteFallback may join a <0xXX> token with the next one.
  bool has_byte_fallback() const { return byte_fallback_; }
  // A character that end-of-text rules may remove from the end (Strip with stop > 0).
  std::optional<char32_t> end_strip_char() const { return end_strip_char_; }
  // False when some step looks across token borders in a way runs cannot reproduce (then the
  // incremental decoder re-decodes the whole sequence).
  bool runs_compose() const { return runs_compose_; }
  // False when more tokens can change text already decoded, beyond the tails the incremental
  // decoder holds back (a multi-character Replace on the fused text): it then streams nothing
  // before flush().
  bool prefix_stable() const { return prefix_stable_; }

  // A vocabulary token's own bytes when a step turns it into bytes (Tokenizer::token_bytes):
  // ByteLevel maps its characters to bytes, ByteFallback a <0xAB> token to its byte; before
  // they are joined, so half of a character stays that half. nullopt for any other token.
  std::optional<std::string> raw_bytes(std::string_view token) const;

  // "<0xAB>" spelling of a byte token.
  static bool is_byte_token(std::string_view token);

 private:
  Decoder() = default;
  Status add_steps(const json& config, const std::string& path);

  std::vector<std::unique_ptr<DecoderStep>> steps_;
  bool fused_ = false;  // the steps so far leave one string (ByteLevel, Fuse)
  bool byte_fallback_ = false;
  bool byte_level_ = false;   // a ByteLevel step
  bool byte_tokens_ = false;  // a ByteFallback step
  bool runs_compose_ = true;
  bool prefix_stable_ = true;
  std::optional<char32_t> end_strip_char_;
};

}  // namespace loraserve::tokenizer
