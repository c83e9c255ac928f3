// Tests of token files: round trips in both dtypes and every kind of damage giving the right
// Status.
#include "cairn/data/token_file.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

namespace cairn::data {
namespace {

namespace fs = std::filesystem;

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cairn_tokfile_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    path_ = (dir_ / "t.bin").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Bytes() {
    std::ifstream in(path_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void SetBytes(const std::string& b) { std::ofstream(path_, std::ios::binary) << b; }
  Status OpenStatus() { return TokenFile::Open(path_).status(); }
  void ExpectError(StatusCode code, const std::string& words) {
    Status s = OpenStatus();
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_NE(s.message().find(path_), std::string::npos) << s.ToString();
    EXPECT_NE(s.message().find(words), std::string::npos) << s.ToString();
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(TokenFileTest, RoundTripUint16) {
  std::vector<int32_t> ids = {0, 1, 50256, 65535, 42};
  ASSERT_TRUE(write_token_file(path_, ids, 65536).ok());
  EXPECT_EQ(fs::file_size(path_), 64u + 2 * ids.size());
  auto f = TokenFile::Open(path_);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->size(), 5);
  EXPECT_EQ((*f)->vocab_size(), 65536);
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ((*f)->at(i), ids[i]);
  std::vector<int64_t> out(3);
  (*f)->copy_to(2, 3, out.data());
  EXPECT_EQ(out, (std::vector<int64_t>{50256, 65535, 42}));
  EXPECT_THROW((*f)->at(5), std::out_of_range);
  EXPECT_THROW((*f)->copy_to(3, 3, out.data()), std::out_of_range);
  // No temporary file is left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(TokenFileTest, RoundTripUint32AndEmpty) {
  std::mt19937 rng(1);
  std::vector<int32_t> ids(100000);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % 200000);
  ASSERT_TRUE(write_token_file(path_, ids, 200000).ok());
  EXPECT_EQ(fs::file_size(path_), 64u + 4 * ids.size());
  auto f = TokenFile::Open(path_);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  std::vector<int64_t> out(ids.size());
  (*f)->copy_to(0, (*f)->size(), out.data());
  for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ(out[i], ids[i]);

  ASSERT_TRUE(write_token_file(path_, {}, 50257).ok());
  auto e = TokenFile::Open(path_);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ((*e)->size(), 0);
}

TEST_F(TokenFileTest, HeaderLayout) {
  ASSERT_TRUE(write_token_file(path_, {7, 8, 9}, 50257).ok());
  std::string b = Bytes();
  ASSERT_EQ(b.size(), 70u);
  EXPECT_EQ(b.substr(0, 8), "CAIRNTOK");
  auto u32 = [&](size_t at) {
    uint32_t v;
    std::memcpy(&v, b.data() + at, 4);
    return v;
  };
  EXPECT_EQ(u32(8), 1u);
  EXPECT_EQ(u32(12), 50257u);
  EXPECT_EQ(u32(16), 2u);
  EXPECT_EQ(u32(20), 3u);  // low half of the u64 count
  EXPECT_EQ(u32(24), 0u);
  EXPECT_EQ(b.substr(36, 28), std::string(28, '\0'));
  EXPECT_EQ(b[64], 7);
}

TEST_F(TokenFileTest, RejectsIdsOutsideVocabOnWrite) {
  Status s = write_token_file(path_, {1, 2, 99}, 50);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("99"), std::string::npos);
  EXPECT_FALSE(fs::exists(path_));
  EXPECT_EQ(write_token_file(path_, {-1}, 50).code(), StatusCode::kInvalidArgument);
}

TEST_F(TokenFileTest, MissingFileOrDirectory) {
  EXPECT_EQ(OpenStatus().code(), StatusCode::kNotFound);
  EXPECT_EQ(TokenFile::Open(dir_.string()).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(TokenFileTest, Truncated) {
  ASSERT_TRUE(write_token_file(path_, std::vector<int32_t>(100, 5), 50257).ok());
  std::string b = Bytes();
  SetBytes(b.substr(0, b.size() - 1));
  ExpectError(StatusCode::kCorrupt, "truncated");
  SetBytes(b.substr(0, 10));
  ExpectError(StatusCode::kCorrupt, "truncated");
  SetBytes("");
  ExpectError(StatusCode::kCorrupt, "truncated");
  SetBytes(b + "xx");
  ExpectError(StatusCode::kCorrupt, "bytes after");
}

TEST_F(TokenFileTest, FlippedPayloadBit) {
  ASSERT_TRUE(write_token_file(path_, std::vector<int32_t>(100, 5), 50257).ok());
  std::string b = Bytes();
  b[64 + 77] ^= 0x10;
  SetBytes(b);
  ExpectError(StatusCode::kCorrupt, "checksum");
}

TEST_F(TokenFileTest, BadMagic) {
  ASSERT_TRUE(write_token_file(path_, {1, 2, 3}, 50257).ok());
  std::string b = Bytes();
  b[0] = 'X';
  SetBytes(b);
  ExpectError(StatusCode::kCorrupt, "magic");
  SetBytes(std::string(200, 'a'));
  ExpectError(StatusCode::kCorrupt, "magic");
}

TEST_F(TokenFileTest, NewerVersionIsUnsupported) {
  ASSERT_TRUE(write_token_file(path_, {1, 2, 3}, 50257).ok());
  std::string b = Bytes();
  b[8] = 2;
  SetBytes(b);
  ExpectError(StatusCode::kUnsupported, "version 2");
}

TEST_F(TokenFileTest, UnknownDtypeAndBadHeader) {
  ASSERT_TRUE(write_token_file(path_, {1, 2, 3}, 50257).ok());
  std::string good = Bytes();
  std::string b = good;
  b[16] = 8;
  SetBytes(b);
  ExpectError(StatusCode::kUnsupported, "dtype 8");
  b = good;
  b[50] = 1;
  SetBytes(b);
  ExpectError(StatusCode::kCorrupt, "padding");
  b = good;
  b[14] = 1;  // vocab 50257 + 65536 * 256 does not fit 16-bit ids
  SetBytes(b);
  ExpectError(StatusCode::kCorrupt, "vocab size");
  b = good;
  b[27] = 0x7F;  // an absurd count
  SetBytes(b);
  ExpectError(StatusCode::kCorrupt, "truncated");
}

TEST_F(TokenFileTest, IdAtOrAboveVocab) {
  // Written with a larger vocabulary, then the header's vocab size lowered: the checksum
  // still matches, so only the id check can catch it.
  ASSERT_TRUE(write_token_file(path_, {1, 2, 300, 4}, 50257).ok());
  std::string b = Bytes();
  uint32_t small_vocab = 300;
  std::memcpy(&b[12], &small_vocab, 4);
  SetBytes(b);
  ExpectError(StatusCode::kCorrupt, "token id 300 at index 2");
}

}  // namespace
}  // namespace cairn::data
