#include "cairn/core/fs.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace cairn::core {
namespace {

TEST(Fs, AtomicWriteThenRead) {
  auto dir = std::filesystem::temp_directory_path() / ("cairn_fs_test_" + std::to_string(getpid()));
  ASSERT_TRUE(make_dirs(dir.string()).ok());
  std::string path = (dir / "a.txt").string();
  ASSERT_TRUE(write_file_atomic(path, "hello").ok());
  ASSERT_TRUE(write_file_atomic(path, "world").ok());
  auto text = read_file(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "world");
  // No temporary file is left behind.
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) n += e.is_regular_file();
  EXPECT_EQ(n, 1);
  ASSERT_TRUE(append_line(path, "x").ok());
  EXPECT_EQ(*read_file(path), "worldx\n");
  std::filesystem::remove_all(dir);
}

TEST(Fs, MissingFileIsNotFound) {
  auto r = read_file("/nonexistent/cairn/file");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

TEST(Fs, WriteIntoMissingDirectoryFails) {
  auto s = write_file_atomic("/nonexistent/cairn/file", "x");
  EXPECT_EQ(s.code(), StatusCode::kIoError);
}

}  // namespace
}  // namespace cairn::core
