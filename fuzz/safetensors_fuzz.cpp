// Fuzzes the safetensors reader on whole files: header length, header JSON, entries, offsets.
// Every accepted file's tensors lie inside it and convert to f32; every refusal is a short,
// clean message. The same bytes as a file opened without mapping (how adapters are read: the
// header alone, then each tensor read from the file at its offset) give the same verdict and
// the same tensors, whose bytes read back equal to the in-memory copy's.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "fuzz/fuzz_util.h"

using namespace loraserve;

namespace {

// Opens `data` as a file without mapping it and checks it against `parsed` (parse()'s verdict on
// the same bytes).
void check_unmapped(const uint8_t* data, size_t size,
                    const Result<std::unique_ptr<formats::SafetensorsFile>>& parsed) {
  const int fd = ::memfd_create("fuzz.safetensors", MFD_CLOEXEC);
  if (fd < 0) fuzz::fail("memfd_create failed");
  if (size > 0 && ::write(fd, data, size) != static_cast<ssize_t>(size)) fuzz::fail("write failed");
  auto file = open_regular_file("/proc/self/fd/" + std::to_string(fd));
  ::close(fd);
  if (!file.ok()) fuzz::fail("the memfd did not open", file.status().to_string());
  formats::SafetensorsReadOptions options;
  options.map = false;
  auto f = formats::SafetensorsFile::open(*file, options);
  if (f.ok() != parsed.ok()) {
    fuzz::fail("reading unmapped and parsing disagree",
               f.ok() ? parsed.status().to_string() : f.status().to_string());
  }
  if (!f.ok()) {
    fuzz::check_status(f.status());
    return;
  }
  const auto& want = (*parsed)->tensors();
  if ((*f)->tensors().size() != want.size()) fuzz::fail("unmapped: another tensor count");
  std::vector<std::byte> buf;
  for (const auto& [name, t] : (*f)->tensors()) {
    auto it = want.find(name);
    if (it == want.end()) fuzz::fail("unmapped: a tensor parse() did not find", name);
    const formats::TensorInfo& p = it->second;
    if (t.data != nullptr || t.nbytes != p.nbytes || t.shape != p.shape ||
        t.dtype_name != p.dtype_name || t.offset != p.offset ||
        (p.nbytes > 0 && std::memcmp(p.data, data + p.offset, p.nbytes) != 0)) {
      fuzz::fail("unmapped: a tensor differs from parse()'s", name);
    }
    buf.resize(t.nbytes);
    const Status st = file->read_at(t.offset, buf.data(), t.nbytes);
    if (!st.ok()) fuzz::fail("unmapped: a tensor did not read", st.to_string());
    if (t.nbytes > 0 && std::memcmp(buf.data(), data + t.offset, t.nbytes) != 0)
      fuzz::fail("unmapped: a tensor's bytes differ from the file's", name);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  auto file = formats::SafetensorsFile::parse(std::move(bytes), "fuzz.safetensors");
  check_unmapped(data, size, file);
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
