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

TEST(Fs, ReadFileUnderStaysBelowItsRoot) {
  namespace fs = std::filesystem;
  const fs::path base = fs::temp_directory_path() / ("cairn_fs_under_" + std::to_string(getpid()));
  fs::remove_all(base);
  const fs::path root = base / "root";
  ASSERT_TRUE(make_dirs((root / "logs").string()).ok());
  ASSERT_TRUE(write_file_atomic((root / "logs/a.log").string(), "inside").ok());
  ASSERT_TRUE(write_file_atomic((base / "secret").string(), "outside").ok());
  fs::create_symlink(base / "secret", root / "link.log");
  fs::create_symlink(base, root / "up");
  fs::create_symlink(root, base / "root-link");
  EXPECT_EQ(*read_file_under(root.string(), "logs/a.log"), "inside");
  EXPECT_EQ(*read_file_under(root.string(), "./logs/a.log"), "inside");
  // The root itself may be a link; what is below it may not.
  EXPECT_EQ(*read_file_under((base / "root-link").string(), "logs/a.log"), "inside");
  for (const char* bad :
       {"../secret", "logs/../../secret", "/etc/passwd", "link.log", "up/secret", ""}) {
    auto r = read_file_under(root.string(), bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument)
        << bad << ": " << r.status().ToString();
  }
  EXPECT_EQ(read_file_under(root.string(), "logs/none.log").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(read_file_under(root.string(), "logs").status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(is_contained_relative_path("a/../../b"));
  EXPECT_TRUE(is_contained_relative_path("a/..b/c"));
  // A directory cairn would write into must be one, not a link planted in its place.
  EXPECT_TRUE(require_real_directory((root / "logs").string()).ok());
  EXPECT_EQ(require_real_directory((root / "up").string()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(require_real_directory((root / "none").string()).code(), StatusCode::kNotFound);
  fs::remove_all(base);
}

}  // namespace
}  // namespace cairn::core
