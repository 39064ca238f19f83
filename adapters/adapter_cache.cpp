#include "adapters/adapter_cache.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace loraserve::adapters {

AdapterCache::AdapterCache(kernels::Backend* backend, const formats::ModelConfig& model,
                           int32_t num_slots)
    : backend_(backend), model_(model), slots_(static_cast<size_t>(std::max(1, num_slots))) {}

std::optional<int32_t> AdapterCache::acquire(const AdapterRef& version) {
  ++clock_;
  sweep_failed();
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (s.key == version.get() && !s.version.expired()) {
      ++s.pins;
      s.last_used = clock_;
      ++counters_.hits;
      return static_cast<int32_t>(i);
    }
  }
  // An empty slot, else the least recently used unpinned one.
  // A slot whose upload is still running is never reused: its device memory is being written.
  Slot* target = nullptr;
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if ((s.key == nullptr || s.version.expired()) && s.pins == 0 &&
        (s.key == nullptr || ready(static_cast<int32_t>(i)))) {
      target = &s;
      break;
    }
  }
  bool evicting = false;
  if (target == nullptr) {
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      if (s.pins == 0 && ready(static_cast<int32_t>(i)) &&
          (target == nullptr || s.last_used < target->last_used)) {
        target = &s;
      }
    }
    if (target == nullptr) return std::nullopt;
    evicting = true;
  }
  if (evicting) {
    if (auto old = target->version.lock()) {
      spdlog::debug("adapter slot {}: evicting task={} version={} for task={}",
                    target - slots_.data(), old->task_id, old->version, version->task_id);
    }
    ++counters_.evictions;
  }
  clear(*target);
  Status st = place(*target, version);
  if (!st.ok()) {
    spdlog::error("adapter task={} version={}: cannot place in a slot: {}", version->task_id,
                  version->version, st.to_string());
    clear(*target);
    return std::nullopt;
  }
  ++counters_.loads;
  ++target->pins;
  target->last_used = clock_;
  return static_cast<int32_t>(target - slots_.data());
}

Status AdapterCache::place(Slot& slot, const AdapterRef& version) {
  const LoraAdapter& a = *version->adapter;
  const std::byte* base = static_cast<const std::byte*>(a.weights().data());
  if (!backend_->shares_host_memory()) {
    LS_ASSIGN_OR_RETURN(slot.device, backend_->allocate(a.bytes()));
    const kernels::Tensor dst =
        slot.device.view(a.dtype(), 1, static_cast<int64_t>(a.bytes() / dtype_size(a.dtype())));
    LS_ASSIGN_OR_RETURN(slot.ticket,
                        backend_->copy_to_device_async(dst, a.weights().data(), a.dtype(),
                                                       static_cast<size_t>(dst.cols)));
    base = static_cast<const std::byte*>(slot.device.data());
    slot.pinned_by_upload = version;
    slot.ready = false;
  } else {
    slot.ready = true;
  }
  slot.key = version.get();
  slot.version = version;
  const int32_t tables = num_lora_tables(model_);
  slot.slices.assign(static_cast<size_t>(tables), kernels::LoraSlice{});
  for (int64_t l = 0; l < model_.num_layers; ++l) {
    for (formats::Projection p : formats::kAllProjections) {
      const LoraModule& m = a.module(l, p);
      if (m.rank == 0) continue;
      auto& s = slot.slices[static_cast<size_t>(lora_table(l, p))];
      s.a = base + m.a_offset;
      s.b = base + m.b_offset;
      s.rank = m.rank;
      s.scale = m.scale;
      s.dtype = a.dtype();
    }
  }
  return ok_status();
}

void AdapterCache::clear(Slot& slot) { slot = Slot{}; }

void AdapterCache::release(int32_t slot) {
  Slot& s = slots_[static_cast<size_t>(slot)];
  if (s.pins > 0) --s.pins;
}

bool AdapterCache::ready(int32_t slot) {
  Slot& s = slots_[static_cast<size_t>(slot)];
  if (s.key == nullptr) return true;
  if (s.ready || !s.failure.ok()) return s.ready;
  Result<bool> done = backend_->upload_done(s.ticket);
  if (!done.ok()) {
    // The host copy stays pinned (pinned_by_upload) until the slot is emptied: whether the copy
    // engine still reads it after a failure is not known.
    const auto v = s.version.lock();
    s.failure =
        done.status().with_context(fmt::format("uploading adapter task={} version={} into slot {}",
                                               v ? v->task_id : "?", v ? v->version : 0, slot));
    spdlog::error("{}", s.failure.to_string());
    return false;
  }
  if (*done) {
    s.ready = true;
    ++counters_.landed;
    s.pinned_by_upload.reset();
  }
  return s.ready;
}

bool AdapterCache::uploads_in_flight() const {
  return std::any_of(slots_.begin(), slots_.end(),
                     [](const Slot& s) { return s.key != nullptr && !s.ready && s.failure.ok(); });
}

void AdapterCache::sweep_failed() {
  for (Slot& s : slots_) {
    if (!s.failure.ok() && s.pins == 0) clear(s);
  }
}

void AdapterCache::sweep() {
  sweep_failed();
  for (Slot& s : slots_) {
    if (s.key != nullptr && s.pins == 0 && s.version.expired() &&
        ready(static_cast<int32_t>(&s - slots_.data()))) {
      clear(s);
    }
  }
}

int32_t AdapterCache::slots_used() const {
  int32_t n = 0;
  for (const Slot& s : slots_) n += s.key != nullptr && !s.version.expired();
  return n;
}

std::vector<SlotInfo> AdapterCache::snapshot() const {
  std::vector<SlotInfo> out;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    auto v = s.version.lock();
    if (!v) continue;
    out.push_back({static_cast<int32_t>(i), v->version, s.pins, s.ready});
  }
  return out;
}

}  // namespace loraserve::adapters
