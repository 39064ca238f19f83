// Fuzzes the safetensors reader on whole files: header length, header JSON, entries, offsets.
// Every accepted file's tensors lie inside it and convert to f32; every refusal is a short,
// clean message.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "fuzz/fuzz_util.h"

using namespace loraserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  auto file = formats::SafetensorsFile::parse(std::move(bytes), "fuzz.safetensors");
  if (!file.ok()) {
    fuzz::check_status(file.status());
    return 0;
  }
  uint64_t total = 0;
  for (const auto& [name, t] : (*file)->tensors()) {
    total += t.nbytes;
    if (t.nbytes > size) fuzz::fail("a tensor is larger than its file", name);
    if (!t.dtype) continue;
    std::vector<float> out(static_cast<size_t>(t.numel()));
    fuzz::check_status(formats::read_as_f32(t, out.data()));
    (void)t.shape_string();
  }
  if (total + 8 > size) fuzz::fail("the tensors hold more bytes than the file");
  return 0;
}
