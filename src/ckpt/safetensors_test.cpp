#include "cairn/ckpt/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "cairn/core/fs.h"

namespace cairn::ckpt {
namespace {

using ::testing::HasSubstr;

std::string TempDir() {
  auto dir =
      std::filesystem::temp_directory_path() / ("cairn_safetensors_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

// A file with the given header text (padded) and `data_bytes` bytes of data.
std::string FileWithHeader(std::string header, size_t data_bytes) {
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + std::string(data_bytes, '\x01');
}

Status DecodeStatus(const std::string& header, size_t data_bytes) {
  return decode_safetensors(FileWithHeader(header, data_bytes), "t.safetensors").status();
}

TEST(Safetensors, RoundTripEveryDtypeAndMetadata) {
  torch::manual_seed(0);
  std::vector<std::pair<std::string, torch::Tensor>> tensors{
      {"f32", torch::randn({3, 5})},
      {"f64", torch::randn({2}, torch::kDouble)},
      {"f16", torch::randn({4, 1}).to(torch::kHalf)},
      {"bf16", torch::randn({7}).to(torch::kBFloat16)},
      {"i64", torch::arange(-5, 6, torch::kLong)},
      {"i32", torch::arange(10, torch::kInt).view({2, 5})},
      {"i16", torch::arange(3, torch::kShort)},
      {"i8", torch::tensor({-128, 0, 127}, torch::kChar)},
      {"u8", torch::tensor({0, 255}, torch::kByte)},
      {"bool", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::randn({4, 6}).t()},
  };
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"step", "12"}};
  const std::string path = TempDir() + "/round_trip.safetensors";
  ASSERT_TRUE(write_safetensors(path, tensors, meta).ok());
  auto got = read_safetensors_file(path);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->metadata, meta);
  ASSERT_EQ(got->tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const auto& r = got->tensors.at(name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(r.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(r, t)) << name;
  }
  auto plain = read_safetensors(path);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->size(), tensors.size());
  std::filesystem::remove_all(TempDir());
}

TEST(Safetensors, LayoutIsAlignedLittleEndianWithOffsetsInOrder) {
  auto bytes = encode_safetensors(
      {{"a", torch::tensor({1.0f, 2.0f})}, {"b", torch::tensor({int64_t{7}})}}, {});
  ASSERT_TRUE(bytes.ok());
  uint64_t n = 0;
  std::memcpy(&n, bytes->data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes->size(), 8 + n + 8 + 8);
  const std::string header = bytes->substr(8, n);
  EXPECT_THAT(header, HasSubstr("\"data_offsets\":[0,8]"));
  EXPECT_THAT(header, HasSubstr("\"data_offsets\":[8,16]"));
  EXPECT_THAT(header, HasSubstr("\"dtype\":\"I64\""));
  EXPECT_EQ(header.find("__metadata__"), std::string::npos);
  float first = 0;
  std::memcpy(&first, bytes->data() + 8 + n, 4);
  EXPECT_EQ(first, 1.0f);
}

TEST(Safetensors, WriterRejectsBadNames) {
  auto t = torch::zeros({1});
  EXPECT_EQ(encode_safetensors({{"a", t}, {"a", t}}, {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(encode_safetensors({{"", t}}, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(encode_safetensors({{"__metadata__", t}}, {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      encode_safetensors({{"c", torch::zeros({1}, torch::kComplexFloat)}}, {}).status().code(),
      StatusCode::kInvalidArgument);
}

TEST(Safetensors, MissingFileIsNotCorrupt) {
  auto r = read_safetensors(TempDir() + "/does_not_exist.safetensors");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().code(), StatusCode::kCorrupt);
  std::filesystem::remove_all(TempDir());
}

TEST(Safetensors, TruncatedFiles) {
  auto good = encode_safetensors({{"w", torch::randn({4, 4})}}, {{"k", "v"}});
  ASSERT_TRUE(good.ok());
  ASSERT_TRUE(decode_safetensors(*good).ok());
  for (size_t keep : {size_t{0}, size_t{5}, size_t{8}, size_t{20}, good->size() - 1}) {
    auto r = decode_safetensors(std::string_view(*good).substr(0, keep), "cut");
    ASSERT_FALSE(r.ok()) << keep;
    EXPECT_EQ(r.status().code(), StatusCode::kCorrupt) << keep;
    EXPECT_THAT(r.status().message(), HasSubstr("cut")) << keep;
  }
}

TEST(Safetensors, HeaderLengthLargerThanFile) {
  std::string bytes(16, ' ');
  const uint64_t n = 1000;
  std::memcpy(bytes.data(), &n, 8);
  auto st = decode_safetensors(bytes).status();
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_THAT(st.message(), HasSubstr("header length 1000"));
  const uint64_t huge = ~uint64_t{0};
  std::memcpy(bytes.data(), &huge, 8);
  EXPECT_EQ(decode_safetensors(bytes).status().code(), StatusCode::kCorrupt);
}

TEST(Safetensors, BadJson) {
  EXPECT_THAT(DecodeStatus("{\"a\": ", 0).message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(DecodeStatus("[1, 2]", 0).message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(DecodeStatus("{\"a\": 3}", 0).message(), HasSubstr("not an object"));
}

TEST(Safetensors, BadDtypes) {
  auto unknown = DecodeStatus(R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", 1);
  EXPECT_EQ(unknown.code(), StatusCode::kCorrupt);
  EXPECT_THAT(unknown.message(), HasSubstr("unknown dtype 'Q7'"));
  auto u32 = DecodeStatus(R"({"a":{"dtype":"U32","shape":[1],"data_offsets":[0,4]}})", 4);
  EXPECT_EQ(u32.code(), StatusCode::kUnsupported);
  EXPECT_EQ(DecodeStatus(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4).code(),
            StatusCode::kCorrupt);
}

TEST(Safetensors, BadShapes) {
  for (const char* shape : {"[-1]", "[1.5]", "\"4\"", "[[2]]", "[4611686018427387904,4]"}) {
    const std::string h =
        std::string(R"({"a":{"dtype":"F32","shape":)") + shape + R"(,"data_offsets":[0,16]}})";
    auto st = DecodeStatus(h, 16);
    EXPECT_EQ(st.code(), StatusCode::kCorrupt) << shape;
    EXPECT_THAT(st.message(), HasSubstr("'a'")) << shape;
  }
  EXPECT_EQ(DecodeStatus(R"({"a":{"dtype":"F32","data_offsets":[0,16]}})", 16).code(),
            StatusCode::kCorrupt);
}

TEST(Safetensors, BadOffsets) {
  auto past = DecodeStatus(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 12);
  EXPECT_THAT(past.message(), HasSubstr("past the 12-byte data section"));
  auto reversed = DecodeStatus(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 16);
  EXPECT_THAT(reversed.message(), HasSubstr("not a range"));
  auto count = DecodeStatus(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16);
  EXPECT_THAT(count.message(), HasSubstr("needs 12 bytes"));
  auto arity = DecodeStatus(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4);
  EXPECT_EQ(arity.code(), StatusCode::kCorrupt);
  auto negative = DecodeStatus(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4);
  EXPECT_EQ(negative.code(), StatusCode::kCorrupt);
}

TEST(Safetensors, OverlappingTensors) {
  auto st = DecodeStatus(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                         16);
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_THAT(st.message(), HasSubstr("overlap"));
  // Empty tensors may sit anywhere.
  EXPECT_TRUE(DecodeStatus(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                           R"("b":{"dtype":"F32","shape":[0,3],"data_offsets":[8,8]}})",
                           16)
                  .ok());
}

TEST(Safetensors, EmptyTensorNameIsCorrupt) {
  // The writer refuses an empty name, so a reader that took one would load a file it cannot
  // write back (found by fuzz/safetensors_fuzz).
  auto st = DecodeStatus(R"({"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_THAT(st.message(), HasSubstr("empty name"));
}

TEST(Safetensors, EmptyTensorInAFileWithoutData) {
  // A shape with a zero holds no bytes, whatever its other dimensions and however small the
  // data section (found by fuzz/safetensors_fuzz: such a file was written but not read back).
  auto st = DecodeStatus(R"({"a":{"dtype":"BOOL","shape":[1,1,0,2],"data_offsets":[0,0]}})", 0);
  EXPECT_TRUE(st.ok()) << st.ToString();
  auto encoded = encode_safetensors({{"a", torch::zeros({3, 0, 2}, torch::kBool)}}, {});
  ASSERT_TRUE(encoded.ok());
  auto decoded = decode_safetensors(*encoded, "t.safetensors");
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->tensors.at("a").sizes(), torch::IntArrayRef({3, 0, 2}));
}

TEST(Safetensors, BadMetadata) {
  EXPECT_THAT(DecodeStatus(R"({"__metadata__":{"k":1}})", 0).message(), HasSubstr("not a string"));
  EXPECT_THAT(DecodeStatus(R"({"__metadata__":["x"]})", 0).message(),
              HasSubstr("__metadata__ is not an object"));
}

TEST(Safetensors, RandomDamageNeverCrashes) {
  auto good =
      encode_safetensors({{"w", torch::randn({8, 8})}, {"b", torch::zeros({8})}}, {{"k", "v"}});
  ASSERT_TRUE(good.ok());
  uint64_t n = 0;
  std::memcpy(&n, good->data(), 8);
  std::mt19937 rng(1);
  int failures = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bytes = *good;
    const size_t pos = rng() % (8 + n);  // damage the length or the header
    bytes[pos] = static_cast<char>(rng() % 256);
    auto r = decode_safetensors(bytes);
    if (!r.ok()) {
      ++failures;
      EXPECT_TRUE(r.status().code() == StatusCode::kCorrupt ||
                  r.status().code() == StatusCode::kUnsupported)
          << r.status().ToString();
    }
  }
  EXPECT_GT(failures, 100);
}

}  // namespace
}  // namespace cairn::ckpt
