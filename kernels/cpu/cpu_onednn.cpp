#include "kernels/cpu/cpu_onednn.h"

#ifdef LORASERVE_HAVE_DNNL

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl_version.h>

#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>

namespace loraserve::kernels::cpu::onednn {
namespace {

using dnnl::memory;

// One matmul shape: operand dtype, sizes, strides and beta.
using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float>;

// The engine, stream and primitives made so far. A step uses a handful of shapes (a model has
// four weight shapes, prefill chunks a few row counts); the map is cleared past kMaxPrimitives.
class State {
 public:
  static constexpr size_t kMaxPrimitives = 256;

  State() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  Status run(memory::data_type dt, int64_t n, int64_t out, int64_t in, const void* x, int64_t ldx,
             const void* w, int64_t ldw, float beta, float* y, int64_t ldy) {
    std::lock_guard lock(mu_);
    try {
      const Key key{static_cast<int>(dt), n, out, in, ldx, ldw, ldy, beta};
      auto it = primitives_.find(key);
      if (it == primitives_.end()) {
        if (primitives_.size() >= kMaxPrimitives) primitives_.clear();
        it = primitives_.emplace(key, make(dt, n, out, in, ldx, ldw, beta, ldy)).first;
      }
      Entry& e = it->second;
      memory src(e.src, engine_, const_cast<void*>(x));
      memory wei(e.wei, engine_, const_cast<void*>(w));
      memory dst(e.dst, engine_, y);
      e.matmul.execute(stream_,
                       {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
      stream_.wait();
    } catch (const dnnl::error& err) {
      return internal_error("oneDNN matmul ({}x{}x{}): {} (status {})", n, out, in, err.what(),
                            static_cast<int>(err.status));
    }
    return ok_status();
  }

  std::string isa() const {
    switch (dnnl::get_effective_cpu_isa()) {
      case dnnl::cpu_isa::avx2:
        return "avx2";
      case dnnl::cpu_isa::avx512_core:
        return "avx512_core";
      case dnnl::cpu_isa::avx512_core_vnni:
        return "avx512_core_vnni";
      case dnnl::cpu_isa::avx512_core_bf16:
        return "avx512_core_bf16";
      case dnnl::cpu_isa::avx512_core_amx:
        return "avx512_core_amx";
      default:
        return "other";
    }
  }

 private:
  struct Entry {
    memory::desc src, wei, dst;
    dnnl::matmul matmul;
  };

  Entry make(memory::data_type dt, int64_t n, int64_t out, int64_t in, int64_t ldx, int64_t ldw,
             float beta, int64_t ldy) {
    Entry e;
    e.src = memory::desc({n, in}, dt, memory::dims{ldx, 1});
    // w is (out, in) row-major: as the (in, out) weights matrix, column j starts at j · ldw.
    e.wei = memory::desc({in, out}, dt, memory::dims{1, ldw});
    e.dst = memory::desc({n, out}, memory::data_type::f32, memory::dims{ldy, 1});
    dnnl::primitive_attr attr;
    if (beta != 0.0f) {
      dnnl::post_ops ops;
      ops.append_sum(beta);
      attr.set_post_ops(ops);
    }
#if DNNL_VERSION_MAJOR >= 3
    const dnnl::matmul::primitive_desc pd(engine_, e.src, e.wei, e.dst, attr);
#else
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(e.src, e.wei, e.dst), attr, engine_);
#endif
    e.matmul = dnnl::matmul(pd);
    return e;
  }

  std::mutex mu_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::map<Key, Entry> primitives_;
};

State& state() {
  static State s;
  return s;
}

}  // namespace

bool available() { return true; }

bool native_bf16() {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

std::string describe() {
  const dnnl_version_t* v = dnnl_version();
  return fmt::format("oneDNN {}.{}.{} ({})", v->major, v->minor, v->patch, state().isa());
}

Status matmul_bf16(int64_t n, int64_t out, int64_t in, const uint16_t* x, const uint16_t* w,
                   int64_t ldw, float beta, float* y, int64_t ldy) {
  return state().run(memory::data_type::bf16, n, out, in, x, in, w, ldw, beta, y, ldy);
}

Status matmul_f32(int64_t n, int64_t out, int64_t in, const float* x, int64_t ldx, const float* w,
                  int64_t ldw, float beta, float* y, int64_t ldy) {
  return state().run(memory::data_type::f32, n, out, in, x, ldx, w, ldw, beta, y, ldy);
}

}  // namespace loraserve::kernels::cpu::onednn

#else

namespace loraserve::kernels::cpu::onednn {

bool available() { return false; }
bool native_bf16() { return false; }
std::string describe() { return "no oneDNN in this build"; }
Status matmul_bf16(int64_t, int64_t, int64_t, const uint16_t*, const uint16_t*, int64_t, float,
                   float*, int64_t) {
  return failed_precondition_error("this build has no oneDNN");
}
Status matmul_f32(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float,
                  float*, int64_t) {
  return failed_precondition_error("this build has no oneDNN");
}

}  // namespace loraserve::kernels::cpu::onednn

#endif
