// The dashboard tests' run directories: a fresh directory and files appended as a job would.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace cairn::dashboard::testing {

// A fresh, empty directory under the temp directory, removed when this goes.
class TempRunDir {
 public:
  explicit TempRunDir(const std::string& name)
      : path_((std::filesystem::temp_directory_path() /
               ("cairn_dash_" + std::to_string(::getpid()) + "_" + name))
                  .string()) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_ + "/logs");
  }
  ~TempRunDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  // Appends `text` as is (a line is whole only with its newline).
  void append(const std::string& file, const std::string& text) const {
    std::ofstream(path_ + "/" + file, std::ios::app) << text;
  }

 private:
  std::string path_;
};

}  // namespace cairn::dashboard::testing
