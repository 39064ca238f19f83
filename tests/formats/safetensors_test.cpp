// Reading safetensors: exact F32/F16/BF16 values, sharded checkpoints, and every malformed file
// refused with a clear error naming the file and the tensor at fault (never a crash).
#include "formats/safetensors.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

namespace loraserve::formats {
namespace {

namespace fs = std::filesystem;

// A fresh folder per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           fmt::format("loraserve_{}_{}_{}", info->name(), ::getpid(), counter_++);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes the 8-byte little-endian `header_len` (the header's size unless given), the header
  // text and `data`. Returns the path.
  std::string write(const std::string& name, const std::string& header, const std::string& data,
                    std::optional<uint64_t> header_len = std::nullopt) {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    const uint64_t len = header_len.value_or(header.size());
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header << data;
    return path;
  }

  // Expects `open` to fail with `code` and a message holding the path and every one of `words`.
  static void expect_error(const std::string& path, StatusCode code,
                           std::initializer_list<const char*> words) {
    auto f = SafetensorsFile::open(path);
    ASSERT_FALSE(f.ok()) << path << " opened";
    EXPECT_EQ(f.status().code(), code) << f.status().to_string();
    EXPECT_NE(f.status().message().find(path), std::string::npos) << f.status().to_string();
    for (const char* w : words)
      EXPECT_NE(f.status().message().find(w), std::string::npos) << f.status().to_string();
  }

  static std::string bytes(const void* p, size_t n) {
    return std::string(static_cast<const char*>(p), n);
  }

  fs::path dir_;
  static inline int counter_ = 0;
};

TEST_F(SafetensorsTest, ReadsF32F16AndBf16Exactly) {
  const float f32[] = {1.0f, -2.5f, 0.1f, 3.0e-8f, 65504.0f, -0.0f};
  // F16: 1, -2, 0x3555 = 0.333251953125, smallest subnormal 2^-24, largest normal, -0.
  const uint16_t f16[] = {0x3C00, 0xC000, 0x3555, 0x0001, 0x7BFF, 0x8000};
  // BF16: 1, -2.5, 0x3DCD = 0.10009765625, 2^-126 (smallest normal), 0x7F7F = 3.3895e38, -0.
  const uint16_t bf16[] = {0x3F80, 0xC020, 0x3DCD, 0x0080, 0x7F7F, 0x8000};
  const std::string header = R"({"__metadata__":{"format":"pt"},)"
                             R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                             R"("b":{"dtype":"F16","shape":[6],"data_offsets":[24,36]},)"
                             R"("c":{"dtype":"BF16","shape":[3,2],"data_offsets":[36,48]}})";
  const std::string path =
      write("good.safetensors", header, bytes(f32, 24) + bytes(f16, 12) + bytes(bf16, 12));
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  EXPECT_EQ((*file)->tensors().size(), 3u);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");

  const TensorInfo* a = (*file)->find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->nbytes, 24u);
  float out[6];
  ASSERT_TRUE(read_as_f32(*a, out).ok());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(std::memcmp(&out[i], &f32[i], 4), 0) << i;

  const TensorInfo* b = (*file)->find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::kF16);
  ASSERT_TRUE(read_as_f32(*b, out).ok());
  const float f16_values[] = {1.0f, -2.0f, 0.333251953125f, 5.9604644775390625e-8f, 65504.0f};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(out[i], f16_values[i]) << i;
  EXPECT_TRUE(std::signbit(out[5]) && out[5] == 0.0f);

  const TensorInfo* c = (*file)->find("c");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->dtype, DType::kBF16);
  EXPECT_EQ(c->shape_string(), "[3, 2]");
  ASSERT_TRUE(read_as_f32(*c, out).ok());
  const float bf16_values[] = {1.0f, -2.5f, 0.10009765625f, 1.1754943508222875e-38f,
                               3.3895313892515355e38f};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(out[i], bf16_values[i]) << i;
  EXPECT_TRUE(std::signbit(out[5]) && out[5] == 0.0f);
  EXPECT_EQ((*file)->find("d"), nullptr);
}

TEST_F(SafetensorsTest, WriterOutputReadsBack) {
  const float values[] = {1.5f, -3.25f, 7.0f, 0.125f};
  const std::string path = (dir_ / "written.safetensors").string();
  ASSERT_TRUE(
      write_safetensors(path, {{"w", "F32", {2, 2}, values, sizeof(values)}}, {{"format", "pt"}})
          .ok());
  auto store = TensorStore::open_file(path);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  auto t = (*store)->get("w", {2, 2});
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  float out[4];
  ASSERT_TRUE(read_as_f32(**t, out).ok());
  EXPECT_EQ(std::memcmp(out, values, sizeof(values)), 0);
}

TEST_F(SafetensorsTest, TruncatedFile) {
  const std::string path = (dir_ / "five.safetensors").string();
  std::ofstream(path, std::ios::binary) << "abcde";
  expect_error(path, StatusCode::kInvalidArgument, {"truncated", "5 bytes"});
}

TEST_F(SafetensorsTest, HeaderLengthPastTheEnd) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  expect_error(write("long.safetensors", header, "xxxx", 1000), StatusCode::kInvalidArgument,
               {"header length 1000", "past the end"});
  expect_error(write("huge.safetensors", header, "xxxx", ~0ull), StatusCode::kInvalidArgument,
               {"header length"});
}

TEST_F(SafetensorsTest, HeaderIsNotJson) {
  expect_error(write("bad.safetensors", "{\"a\": [1, 2", ""), StatusCode::kInvalidArgument,
               {"not valid JSON", "line 1, column 12"});
  expect_error(write("list.safetensors", "[1, 2]", ""), StatusCode::kInvalidArgument,
               {"not a JSON object"});
}

TEST_F(SafetensorsTest, OffsetsOutOfRange) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[16],"data_offsets":[0,64]}})";
  expect_error(write("range.safetensors", header, std::string(16, '\0')),
               StatusCode::kInvalidArgument, {"'w'", "outside the 16 data bytes"});
}

TEST_F(SafetensorsTest, DataCutShortIsOutOfRange) {
  const std::string header = R"({"w":{"dtype":"BF16","shape":[4,4],"data_offsets":[0,32]}})";
  expect_error(write("cut.safetensors", header, std::string(20, '\0')),
               StatusCode::kInvalidArgument, {"'w'", "outside"});
}

TEST_F(SafetensorsTest, OffsetsEndBeforeBegin) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})";
  expect_error(write("backwards.safetensors", header, std::string(8, '\0')),
               StatusCode::kInvalidArgument, {"'w'", "end 4 < begin 8"});
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  const std::string header = R"({"first":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                             R"("second":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})";
  expect_error(write("overlap.safetensors", header, std::string(24, '\0')),
               StatusCode::kInvalidArgument, {"'first'", "'second'", "overlap"});
}

TEST_F(SafetensorsTest, UnknownDtype) {
  const std::string header = R"({"w":{"dtype":"F12","shape":[2],"data_offsets":[0,4]}})";
  expect_error(write("dtype.safetensors", header, std::string(4, '\0')),
               StatusCode::kInvalidArgument, {"'w'", "unknown dtype 'F12'"});
}

TEST_F(SafetensorsTest, ByteCountDisagreesWithShape) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})";
  expect_error(write("shape.safetensors", header, std::string(20, '\0')),
               StatusCode::kInvalidArgument, {"'w'", "20 bytes", "[2, 3]", "expected 24"});
}

TEST_F(SafetensorsTest, EntryWithoutItsFields) {
  expect_error(write("fields.safetensors", R"({"w":{"dtype":"F32","shape":[1]}})", ""),
               StatusCode::kInvalidArgument, {"'w'", "data_offsets"});
  expect_error(
      write("negative.safetensors", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
            std::string(4, '\0')),
      StatusCode::kInvalidArgument, {"'w'", "invalid dimension -1"});
}

TEST_F(SafetensorsTest, MissingFile) {
  expect_error((dir_ / "absent.safetensors").string(), StatusCode::kNotFound, {"no such file"});
}

TEST_F(SafetensorsTest, EveryTruncationOfAGoodFileFailsCleanly) {
  const float values[6] = {1, 2, 3, 4, 5, 6};
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})";
  const std::string whole = write("whole.safetensors", header, bytes(values, 24));
  std::string content;
  {
    std::ifstream in(whole, std::ios::binary);
    content.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_TRUE(SafetensorsFile::open(whole).ok());
  for (size_t n = 0; n < content.size(); ++n) {
    const std::string path = (dir_ / fmt::format("prefix_{}.safetensors", n)).string();
    std::ofstream(path, std::ios::binary) << content.substr(0, n);
    auto f = SafetensorsFile::open(path);
    EXPECT_FALSE(f.ok()) << "a file cut to " << n << " bytes opened";
    EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument) << f.status().to_string();
  }
}

TEST_F(SafetensorsTest, StoreNamesMissingTensorsAndWrongShapes) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                             R"("i":{"dtype":"I64","shape":[2],"data_offsets":[16,32]},)"
                             R"("d":{"dtype":"F64","shape":[1],"data_offsets":[32,40]}})";
  const std::string path = write("store.safetensors", header, std::string(40, '\0'));
  auto store = TensorStore::open_file(path);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  EXPECT_EQ((*store)->size(), 3u);

  // A checkpoint that lacks a tensor the model needs is malformed: INVALID_ARGUMENT.
  auto missing = (*store)->get("model.norm.weight", {2});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("store.safetensors"), std::string::npos);
  EXPECT_NE(missing.status().message().find("'model.norm.weight'"), std::string::npos);

  auto shape = (*store)->get("w", {4, 1});
  ASSERT_FALSE(shape.ok());
  EXPECT_EQ(shape.status().code(), StatusCode::kInvalidArgument);
  for (const char* w : {"'w'", "[2, 2]", "expected [4, 1]", "store.safetensors"})
    EXPECT_NE(shape.status().message().find(w), std::string::npos) << shape.status().to_string();

  // Valid safetensors dtypes that are no weight dtype: opened, but refused as weights.
  EXPECT_FALSE((*store)->find("d")->dtype.has_value());
  for (const char* name : {"i", "d"}) {
    auto t = (*store)->get(name, {(*store)->find(name)->shape});
    ASSERT_FALSE(t.ok()) << name;
    EXPECT_NE(t.status().message().find("F32, F16 or BF16"), std::string::npos)
        << t.status().to_string();
  }
}

TEST_F(SafetensorsTest, ShardedFixtureCheckpoint) {
  const std::string dir = "tests/reference/fixtures/qwen2_sharded_f16";
  std::ifstream in(dir + "/model.safetensors.index.json");
  ASSERT_TRUE(in) << "run from the source root";
  const auto index = nlohmann::json::parse(in);
  auto store = TensorStore::open_folder(dir, "model.safetensors");
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  EXPECT_EQ((*store)->size(), index["weight_map"].size());
  std::set<std::string> files;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    const TensorInfo* t = (*store)->find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(fs::path(t->file).filename().string(), shard.get<std::string>()) << name;
    EXPECT_EQ(t->dtype, DType::kF16) << name;
    files.insert(t->file);
  }
  EXPECT_EQ(files.size(), 2u);
  auto embed = (*store)->get("model.embed_tokens.weight", {256, 48});
  EXPECT_TRUE(embed.ok()) << embed.status().to_string();
}

TEST_F(SafetensorsTest, ShardedIndexErrors) {
  const std::string shard_header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  write("shard-1.safetensors", shard_header, std::string(4, '\0'));
  auto write_index = [&](const std::string& text) {
    std::ofstream((dir_ / "model.safetensors.index.json").string()) << text;
    return TensorStore::open_folder(dir_.string(), "model.safetensors");
  };
  auto ok = write_index(R"({"weight_map":{"a":"shard-1.safetensors"}})");
  EXPECT_TRUE(ok.ok()) << ok.status().to_string();

  auto absent = write_index(R"({"weight_map":{"b":"shard-1.safetensors"}})");
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(absent.status().message().find("'b'"), std::string::npos);
  EXPECT_NE(absent.status().message().find("shard-1.safetensors"), std::string::npos);

  auto no_shard = write_index(R"({"weight_map":{"a":"shard-2.safetensors"}})");
  ASSERT_FALSE(no_shard.ok());
  EXPECT_EQ(no_shard.status().code(), StatusCode::kNotFound);
  EXPECT_NE(no_shard.status().message().find("shard-2.safetensors"), std::string::npos);

  auto escape = write_index(R"({"weight_map":{"a":"../shard-1.safetensors"}})");
  ASSERT_FALSE(escape.ok());
  EXPECT_NE(escape.status().message().find("plain file name"), std::string::npos);

  auto no_map = write_index(R"({"metadata":{}})");
  ASSERT_FALSE(no_map.ok());
  EXPECT_NE(no_map.status().message().find("weight_map"), std::string::npos);

  fs::remove(dir_ / "model.safetensors.index.json");
  auto none = TensorStore::open_folder(dir_.string(), "model.safetensors");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, TensorsMustTileTheDataRegion) {
  // A gap between tensors, bytes after the last one, and data that starts late are all refused,
  // as the reference implementation refuses them.
  const std::string gap = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  expect_error(write("gap.safetensors", gap, std::string(12, '\0')), StatusCode::kInvalidArgument,
               {"'b'", "starts at data byte 8", "ends at 4"});
  const std::string one = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  expect_error(write("trailing.safetensors", one, std::string(4096, '\0')),
               StatusCode::kInvalidArgument, {"cover 4 of the 4096 data bytes"});
  const std::string late = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  expect_error(write("late.safetensors", late, std::string(8, '\0')), StatusCode::kInvalidArgument,
               {"starts at data byte 4"});
  // Zero-sized tensors take no bytes and may sit anywhere in the order.
  const std::string empty = R"({"e":{"dtype":"F32","shape":[0,5],"data_offsets":[4,4]},)"
                            R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  auto ok = SafetensorsFile::open(write("empty.safetensors", empty, std::string(4, '\0')));
  EXPECT_TRUE(ok.ok()) << ok.status().to_string();
}

TEST_F(SafetensorsTest, SizesThatOverflowAreRefusedNamingTheTensor) {
  // 2^62 x 4 elements overflow a signed 64-bit count; 2^63 is no dimension at all.
  const std::string big =
      R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}})";
  expect_error(write("big.safetensors", big, std::string(4, '\0')), StatusCode::kInvalidArgument,
               {"'w'", "overflows"});
  const std::string bytes =
      R"({"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}})";
  expect_error(write("bytes.safetensors", bytes, std::string(8, '\0')),
               StatusCode::kInvalidArgument, {"'w'", "byte count overflows"});
  const std::string huge_dim =
      R"({"w":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4]}})";
  expect_error(write("dim.safetensors", huge_dim, std::string(4, '\0')),
               StatusCode::kInvalidArgument, {"'w'", "invalid dimension"});
  const std::string float_dim = R"({"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})";
  expect_error(write("float.safetensors", float_dim, std::string(4, '\0')),
               StatusCode::kInvalidArgument, {"'w'", "invalid dimension 1.0"});
  const std::string offsets =
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}})";
  expect_error(write("offsets.safetensors", offsets, std::string(4, '\0')),
               StatusCode::kInvalidArgument, {"'w'"});
}

TEST_F(SafetensorsTest, HostileHeadersFailShortAndClean) {
  // A deeply nested shape: refused by the JSON depth limit, without recursion.
  const std::string deep = R"({"w":{"dtype":"F32","shape":)" + std::string(200000, '[') +
                           std::string(200000, ']') + R"(,"data_offsets":[0,0]}})";
  auto d = SafetensorsFile::open(write("deep.safetensors", deep, ""));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("deeper than"), std::string::npos) << d.status().message();
  EXPECT_LT(d.status().message().size(), 400u);
  // A tensor name of 100 kB is cut in the message.
  const std::string name(100000, 'n');
  const std::string long_name =
      "{\"" + name + R"(":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})";
  auto l = SafetensorsFile::open(write("name.safetensors", long_name, std::string(4, '\0')));
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("(100000 bytes)"), std::string::npos);
  EXPECT_LT(l.status().message().size(), 400u);
  // A header length just under the cap but past the end of a small file.
  expect_error(write("cap.safetensors", "{}", "", 60'000'000), StatusCode::kInvalidArgument,
               {"past the end"});
  expect_error(write("over.safetensors", "{}", "", 100'000'001), StatusCode::kInvalidArgument,
               {"exceeds the limit"});
}

TEST_F(SafetensorsTest, AHugeSparseFileIsRefusedByItsSizeNotRead) {
  const std::string path = write("sparse.safetensors", "{}", "");
  fs::resize_file(path, 1ull << 40);
  auto file = open_regular_file(path);
  ASSERT_TRUE(file.ok());
  SafetensorsReadOptions options;
  options.map = false;
  options.max_file_bytes = 1 << 20;
  auto f = SafetensorsFile::open(*file, options);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(f.status().message().find("1099511627776 bytes"), std::string::npos)
      << f.status().message();
}

TEST_F(SafetensorsTest, UnmappedReadsTheHeaderAloneAndGivesEachTensorsOffset) {
  const float values[] = {1.5f, -3.25f, 7.0f, 0.125f};
  const uint16_t half[] = {0x3c00, 0xc000};  // 1.0, -2.0 in F16
  const std::string path = (dir_ / "mem.safetensors").string();
  ASSERT_TRUE(write_safetensors(path, {{"w", "F32", {2, 2}, values, sizeof(values)},
                                       {"h", "F16", {2}, half, sizeof(half)}})
                  .ok());
  auto file = open_regular_file(path);
  ASSERT_TRUE(file.ok());
  SafetensorsReadOptions options;
  options.map = false;
  auto f = SafetensorsFile::open(*file, options);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  const TensorInfo* w = (*f)->find("w");
  const TensorInfo* h = (*f)->find("h");
  ASSERT_NE(w, nullptr);
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(w->data, nullptr);
  EXPECT_EQ(w->nbytes, sizeof(values));
  EXPECT_EQ(h->offset - w->offset, sizeof(values));  // written in this order, tiling the data
  EXPECT_EQ(w->offset + sizeof(values) + sizeof(half), fs::file_size(path));
  float out[4];
  ASSERT_TRUE(file->read_at(w->offset, out, sizeof(out)).ok());
  EXPECT_EQ(std::memcmp(out, values, sizeof(values)), 0);
  // read_as_f32 needs the bytes in memory: an error, not a crash.
  EXPECT_EQ(read_as_f32(*w, out).code(), StatusCode::kInternal);
  // The file shrinks after its header was read: reading the tensor is an error naming the file.
  fs::resize_file(path, w->offset + 4);
  const Status st = file->read_at(w->offset, out, sizeof(out));
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("mem.safetensors"), std::string::npos) << st.message();
}

TEST_F(SafetensorsTest, UnmappedRefusesAnOversizedHeaderLengthWithoutReadingIt) {
  // The length field says 2^40: refused from the 8 bytes alone.
  std::string bytes(8, '\0');
  const uint64_t len = uint64_t{1} << 40;
  std::memcpy(bytes.data(), &len, 8);
  bytes += "{}";
  const std::string path = (dir_ / "len.safetensors").string();
  std::ofstream(path, std::ios::binary) << bytes;
  auto file = open_regular_file(path);
  ASSERT_TRUE(file.ok());
  SafetensorsReadOptions options;
  options.map = false;
  auto f = SafetensorsFile::open(*file, options);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("exceeds the limit"), std::string::npos)
      << f.status().message();
}

TEST_F(SafetensorsTest, FifoAndDeviceAreRefusedWithoutBlocking) {
  const std::string fifo = (dir_ / "fifo.safetensors").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_error(fifo, StatusCode::kInvalidArgument, {"a FIFO"});
  fs::create_symlink("/dev/zero", dir_ / "zero.safetensors");
  expect_error((dir_ / "zero.safetensors").string(), StatusCode::kInvalidArgument,
               {"a character device"});
}

TEST_F(SafetensorsTest, ShardNamesStayInTheModelFolder) {
  const std::string shard_header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  write("shard-1.safetensors", shard_header, std::string(4, '\0'));
  for (const char* bad : {"/etc/passwd", "..", ".", "", "sub/shard-1.safetensors"}) {
    std::ofstream((dir_ / "model.safetensors.index.json").string())
        << nlohmann::json({{"weight_map", {{"a", bad}}}}).dump();
    auto store = TensorStore::open_folder(dir_.string(), "model.safetensors");
    ASSERT_FALSE(store.ok()) << bad;
    EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument) << store.status().to_string();
    EXPECT_NE(store.status().message().find("model.safetensors.index.json"), std::string::npos);
    EXPECT_NE(store.status().message().find("weight_map"), std::string::npos);
  }
  std::ofstream((dir_ / "model.safetensors.index.json").string()) << "[[[[";
  auto broken = TensorStore::open_folder(dir_.string(), "model.safetensors");
  EXPECT_EQ(broken.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(broken.status().message().find("not valid JSON"), std::string::npos);
}

// An empty tensor (a 0 in its shape) has no bytes, and reading it touches none: found by the
// safetensors fuzz target, where UndefinedBehaviorSanitizer saw memcpy given a null pointer.
TEST_F(SafetensorsTest, EmptyTensorsReadAsNothing) {
  const std::string path = write("empty.safetensors",
                                 R"({"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},)"
                                 R"("w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                 std::string(4, '\0'));
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  const TensorInfo* t = (*f)->find("e");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->numel(), 0);
  EXPECT_TRUE(read_as_f32(*t, nullptr).ok());
}

TEST_F(SafetensorsTest, MisalignedTensorsReadCorrectly) {
  // A 3-element BF16 tensor (6 bytes) puts the F32 after it off a 4-byte boundary, and a header
  // of odd length puts every tensor at an odd address: both valid, both read without a
  // misaligned load (the sanitizer build checks).
  const uint16_t bf16[] = {0x3F80, 0xC020, 0x4000};
  const float f32[] = {0.5f, -1.0f};
  const std::string header = R"({"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[6,14]}})";
  for (size_t data_begin_mod_8 : {0, 1}) {
    std::string padded = header;
    while ((8 + padded.size()) % 8 != data_begin_mod_8) padded += ' ';
    const std::string path = write(fmt::format("odd{}.safetensors", data_begin_mod_8), padded,
                                   bytes(bf16, 6) + bytes(f32, 8));
    auto f = SafetensorsFile::open(path);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    float out[3];
    ASSERT_TRUE(read_as_f32(*(*f)->find("a"), out).ok());
    EXPECT_EQ(out[0], 1.0f);
    EXPECT_EQ(out[1], -2.5f);
    EXPECT_EQ(out[2], 2.0f);
    ASSERT_TRUE(read_as_f32(*(*f)->find("b"), out).ok());
    EXPECT_EQ(out[0], 0.5f);
    EXPECT_EQ(out[1], -1.0f);
  }
}

}  // namespace
}  // namespace loraserve::formats
