// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}): vocabulary, merges by rank
// (a heap over adjacent pairs, O(n log n) in the word length), byte_fallback to <0xXX> tokens,
// unk with fuse_unk, ignore_merges, continuing_subword_prefix and end_of_word_suffix. Immutable
// after load except for a bounded cache of word results, guarded by sharded mutexes: all methods
// are thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "tokenizer/json_fields.h"

namespace loraserve::tokenizer {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // `config` is tokenizer.json's "model" object; `path` names it in errors.
  static Result<std::unique_ptr<BpeModel>> from_json(const json& config, const std::string& path);

  // Appends the ids of one pre-tokenized word to *ids.
  void tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The token with this id, or nullptr when the vocabulary has none.
  const std::string* id_to_token(int32_t id) const;
  // Highest id in the vocabulary (-1 when empty).
  int32_t max_id() const { return max_id_; }

 private:
  struct MergeRule {
    int32_t rank;
    int32_t new_id;
  };
  // A bounded word -> ids cache, direct-mapped: a word's hash picks its one slot, and a new word
  // replaces the old one there. Sharded so that threads rarely wait on the same mutex.
  class WordCache {
   public:
    WordCache();
    bool find(std::string_view word, std::vector<int32_t>* ids) const;
    void insert(std::string_view word, const std::vector<int32_t>& ids) const;

   private:
    static constexpr size_t kShards = 16;
    static constexpr size_t kSlotsPerShard = 8192;  // a power of two
    struct Slot {
      uint64_t hash = 0;
      std::string word;
      std::vector<int32_t> ids;
    };
    struct Shard {
      std::mutex mutex;
      std::vector<Slot> slots;
    };
    mutable std::array<Shard, kShards> shards_;
  };

  BpeModel() = default;
  Status load_vocab(const json& vocab, const std::string& path);
  Status load_merges(const json& merges, const std::string& path);
  void merge_word(std::string_view word, std::vector<int32_t>* ids) const;

  TokenIdMap vocab_;
  std::unordered_map<int32_t, const std::string*> tokens_;  // id -> its key in vocab_
  int32_t max_id_ = -1;
  std::unordered_map<uint64_t, MergeRule> merges_;
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};  // <0xXX> token ids, -1 where the vocabulary has none
  WordCache cache_;
};

}  // namespace loraserve::tokenizer
