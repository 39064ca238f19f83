// Tokenizer: a Hugging Face tokenizer.json loaded into the pipeline the file describes (added
// tokens, normalizer, pre-tokenizer, BPE model, post-processor, decoder), encoding and decoding
// exactly as Tokenizer.from_file(path).encode(text, add_special_tokens) / .decode(ids,
// skip_special_tokens) do; where the two references disagree, @lenml/tokenizers decides (see
// tokenizer/regex.h). Immutable after load: encode and decode are const and thread-safe (the BPE
// word cache is internally locked).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/untrusted_file.h"
#include "tokenizer/added_vocabulary.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"

namespace loraserve::tokenizer {

class Tokenizer {
 public:
  // Reads tokenizer.json (a regular file of at most --max-json-bytes, common/untrusted_json.h).
  // NOT_FOUND when it is absent; INVALID_ARGUMENT naming the file and field when malformed.
  static Result<std::unique_ptr<Tokenizer>> from_file(const std::string& path);
  static Result<std::unique_ptr<Tokenizer>> from_file(const ReadOnlyFile& file);
  // `source` names the text in error messages (a path, or e.g. "<test>").
  static Result<std::unique_ptr<Tokenizer>> from_json(const std::string& json_text,
                                                      const std::string& source);

  // Token ids of `text`; with add_special_tokens the post-processor's tokens (e.g. BOS) too.
  // Invalid UTF-8 -> INVALID_ARGUMENT naming the byte offset.
  Result<std::vector<int32_t>> encode(std::string_view text, bool add_special_tokens = true) const;

  // Text of `ids`; skip_special_tokens leaves out added tokens marked special. An id with no
  // token decodes to nothing (as Hugging Face's); a negative id -> INVALID_ARGUMENT naming it.
  Result<std::string> decode(std::span<const int32_t> ids, bool skip_special_tokens = true) const;

  // Highest id + 1, added tokens included.
  // The bytes token `id` stands for, as logprobs show it (OpenAI's `bytes`): a byte-level token's
  // bytes, a <0xAB> token's byte (a piece of a multi-byte character stays that piece, not
  // U+FFFD), else the token decoded as inside a text (a SentencePiece "▁the" is " the");
  // special tokens included; "" for an id with no token.
  // INVALID_ARGUMENT for a negative id.
  Result<std::string> token_bytes(int32_t id) const;

  int32_t vocab_size() const { return vocab_size_; }
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The vocabulary string of `id` (an added token's content, or the model's token).
  std::optional<std::string_view> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;

 private:
  friend class IncrementalDecoder;

  Tokenizer() = default;
  // Builds every stage from the parsed tokenizer.json; errors name the field at fault.
  Status load(const json& root);
  // Encodes one piece of text between added tokens, appending its ids.
  Status encode_piece(std::string_view text, size_t offset, std::vector<int32_t>* ids) const;
  // Decodes ids (none negative) as a run of a longer sequence; ids with no token give no text.
  Result<std::string> decode_run(std::span<const int32_t> ids, bool skip_special_tokens,
                                 bool at_start, bool at_end) const;
  Status check_ids(std::span<const int32_t> ids) const;        // none negative
  Status check_known_ids(std::span<const int32_t> ids) const;  // each with a token

  std::string source_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  AddedVocabulary added_;
  PostProcessor post_processor_{{}, {}};
  std::unique_ptr<Decoder> decoder_;
  int32_t vocab_size_ = 0;
};

}  // namespace loraserve::tokenizer
