// A budget of bytes that threads share, for work whose memory grows with its input: a request's
// parsing, chat rendering and tokenization take about 30 times its bytes at their peak (a 4 MiB
// prompt of one word: 117 MiB), so 16 such requests at once took 1.9 GB and the 256 that
// --http-threads lets in would take 30 GB. A request claims its size before that work and
// releases it before it waits for its answer; claims wait their turn in arrival order, so the
// memory at once stays near 30 times the budget while every request is still served.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace loraserve {

class ByteBudget {
 public:
  // REQUIRES: capacity >= 1.
  explicit ByteBudget(size_t capacity) : capacity_(capacity) {}
  ByteBudget(const ByteBudget&) = delete;
  ByteBudget& operator=(const ByteBudget&) = delete;

  // Bytes held until destroyed or released. Move-only.
  class Claim {
   public:
    Claim() = default;
    Claim(Claim&& o) noexcept : budget_(o.budget_), bytes_(o.bytes_) { o.budget_ = nullptr; }
    Claim& operator=(Claim&& o) noexcept;
    Claim(const Claim&) = delete;
    Claim& operator=(const Claim&) = delete;
    ~Claim() { release(); }

    void release();
    size_t bytes() const { return budget_ == nullptr ? 0 : bytes_; }

   private:
    friend class ByteBudget;
    Claim(ByteBudget* budget, size_t bytes) : budget_(budget), bytes_(bytes) {}
    ByteBudget* budget_ = nullptr;
    size_t bytes_ = 0;
  };

  // Waits until every earlier claim has been granted and `bytes` are free, then holds them. A
  // claim larger than the whole budget waits until nothing is held and then holds all of it.
  Claim claim(size_t bytes);

  size_t capacity() const { return capacity_; }
  size_t held() const;
  size_t waiting() const;  // claims not yet granted

 private:
  void give_back(size_t bytes);

  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  size_t held_ = 0;
  uint64_t next_ticket_ = 0;  // the ticket the next claim takes
  uint64_t serving_ = 0;      // the ticket whose turn it is
};

}  // namespace loraserve
