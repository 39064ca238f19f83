// weights_error: the error BF16 and I8 weights add to each weight matrix's products, per layer:
// for every matrix of a checkpoint (embedding, q/k/v/o, gate/up/down, lm_head), y = x · Wᵀ for
// random unit-normal rows x, with W kept in BF16 and in I8 (as the CPU backend keeps it) and x as
// the chosen kernel takes it (rounded to bf16 by the BF16 products where the CPU multiplies bf16
// natively, int16 groups for I8 with AVX512_VNNI), against the same product in float64 with the
// checkpoint's own values. Prints the relative error
// ‖Δy‖₂ / ‖y‖₂ and the largest |Δy| over the largest |y| per matrix, then the worst per kind.
//   weights_error --model models/demo
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <map>
#include <random>

#include "formats/hf_config.h"
#include "formats/safetensors.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_matmul.h"

namespace loraserve::bench {
namespace {

struct Error {
  double relative = 0;   // ‖Δy‖₂ / ‖y‖₂
  double max_ratio = 0;  // max |Δy| / max |y|
};

// y = x · Wᵀ through the CPU backend's matmul with W kept as `dtype`, against float64.
Result<Error> product_error(const std::vector<float>& w, int64_t out, int64_t in,
                            const std::vector<float>& x, int64_t rows, DType dtype) {
  std::vector<char> storage(kernels::weight_storage_bytes(dtype, out, in) + 64);
  void* base = storage.data() + (64 - reinterpret_cast<uintptr_t>(storage.data()) % 64) % 64;
  const kernels::Tensor t = kernels::weight_view(base, dtype, out, in);
  LS_RETURN_IF_ERROR(kernels::cpu::convert_weights(t, w.data(), DType::kF32));
  std::vector<float> y(static_cast<size_t>(rows * out));
  LS_RETURN_IF_ERROR(kernels::cpu::matmul(rows, x.data(), in, t, 0.0f, y.data(), out));
  double err2 = 0, ref2 = 0, max_err = 0, max_ref = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double ref = 0;
      for (int64_t k = 0; k < in; ++k)
        ref += static_cast<double>(x[static_cast<size_t>(r * in + k)]) *
               w[static_cast<size_t>(o * in + k)];
      const double d = y[static_cast<size_t>(r * out + o)] - ref;
      err2 += d * d;
      ref2 += ref * ref;
      max_err = std::max(max_err, std::fabs(d));
      max_ref = std::max(max_ref, std::fabs(ref));
    }
  }
  return Error{std::sqrt(err2 / std::max(ref2, 1e-300)), max_err / std::max(max_ref, 1e-300)};
}

Status run(const std::string& model_dir, int64_t rows) {
  LS_ASSIGN_OR_RETURN(formats::ModelConfig c, formats::load_model_config(model_dir));
  LS_ASSIGN_OR_RETURN(auto store,
                      formats::TensorStore::open_folder(model_dir, "model.safetensors"));
  std::vector<std::pair<std::string, std::string>> matrices;  // (name, kind)
  matrices.emplace_back("model.embed_tokens.weight", "embed_tokens");
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (const char* p : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                          "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
      matrices.emplace_back(fmt::format("model.layers.{}.{}.weight", l, p), p);
    }
  }
  if (store->find("lm_head.weight") != nullptr) matrices.emplace_back("lm_head.weight", "lm_head");
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  fmt::print(
      "{}: y = x·Wᵀ for {} random unit-normal rows; BF16 and I8 weights (groups of {}) "
      "against float64 with the checkpoint's values\n",
      model_dir, rows, kI8GroupSize);
  fmt::print("{:<40} {:>13} {:>12} {:>12} {:>12} {:>12}\n", "matrix", "shape", "BF16 rel",
             "BF16 max", "I8 rel", "I8 max");
  std::map<std::string, std::pair<Error, Error>> worst;
  for (const auto& [name, kind] : matrices) {
    const formats::TensorInfo* info = store->find(name);
    if (info == nullptr || info->shape.size() != 2)
      return not_found_error("{}: no 2-D tensor '{}'", model_dir, name);
    const int64_t out = info->shape[0], in = info->shape[1];
    std::vector<float> w(static_cast<size_t>(out * in));
    LS_RETURN_IF_ERROR(formats::read_as_f32(*info, w.data()));
    std::vector<float> x(static_cast<size_t>(rows * in));
    for (auto& v : x) v = normal(rng);
    LS_ASSIGN_OR_RETURN(Error bf16, product_error(w, out, in, x, rows, DType::kBF16));
    LS_ASSIGN_OR_RETURN(Error i8, product_error(w, out, in, x, rows, DType::kI8));
    fmt::print("{:<40} {:>13} {:>12.2e} {:>12.2e} {:>12.2e} {:>12.2e}\n", name,
               fmt::format("{}x{}", out, in), bf16.relative, bf16.max_ratio, i8.relative,
               i8.max_ratio);
    auto& wk = worst[kind];
    wk.first.relative = std::max(wk.first.relative, bf16.relative);
    wk.first.max_ratio = std::max(wk.first.max_ratio, bf16.max_ratio);
    wk.second.relative = std::max(wk.second.relative, i8.relative);
    wk.second.max_ratio = std::max(wk.second.max_ratio, i8.max_ratio);
  }
  fmt::print("\nworst per kind of matrix over the layers:\n");
  fmt::print("{:<20} {:>12} {:>12} {:>12} {:>12}\n", "kind", "BF16 rel", "BF16 max", "I8 rel",
             "I8 max");
  for (const auto& [kind, e] : worst) {
    fmt::print("{:<20} {:>12.2e} {:>12.2e} {:>12.2e} {:>12.2e}\n", kind, e.first.relative,
               e.first.max_ratio, e.second.relative, e.second.max_ratio);
  }
  return ok_status();
}

}  // namespace
}  // namespace loraserve::bench

int main(int argc, char** argv) {
  CLI::App app{"weights_error: per-matrix error of BF16 and I8 weights"};
  std::string model_dir = "models/demo";
  int64_t rows = 16;
  app.add_option("--model", model_dir, "A Hugging Face model folder")->capture_default_str();
  app.add_option("--rows", rows, "Rows of x")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const loraserve::Status st = loraserve::bench::run(model_dir, rows);
  if (!st.ok()) {
    spdlog::error("{}", st.to_string());
    return 1;
  }
  return 0;
}
