// Post-processors: what tokenizer.json's "post_processor" adds around an encoded sequence when
// special tokens are requested (TemplateProcessing, BertProcessing, RobertaProcessing; ByteLevel
// only adjusts offsets, which loraserve does not return; Sequence). Immutable; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "tokenizer/json_fields.h"

namespace loraserve::tokenizer {

class PostProcessor {
 public:
  // The ids of one sequence become: prefix ids, the sequence, suffix ids.
  PostProcessor(std::vector<int32_t> prefix, std::vector<int32_t> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}

  // Builds it from `config` (null: adds nothing); `path` names it in errors.
  static Result<PostProcessor> from_json(const json& config, const std::string& path);

  void apply(std::vector<int32_t>* ids) const;
  const std::vector<int32_t>& prefix() const { return prefix_; }
  const std::vector<int32_t>& suffix() const { return suffix_; }

 private:
  std::vector<int32_t> prefix_;
  std::vector<int32_t> suffix_;
};

}  // namespace loraserve::tokenizer
