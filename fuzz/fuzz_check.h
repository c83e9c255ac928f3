// What the fuzz targets share: FUZZ_CHECK, a property every input must keep (a round trip, a
// bound the parser promises); its failure aborts, which libFuzzer reports as a crash and saves
// the input. And the in-memory file a target hands to a parser that reads descriptors.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <string>

#define FUZZ_CHECK(cond, detail)                                                            \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: %s\n", __FILE__, __LINE__, #cond, \
                   std::string(detail).c_str());                                            \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

namespace cairn::fuzz {

// A file in memory (memfd) holding `size` bytes, closed by the destructor; path() reopens it
// by name (/proc/self/fd/N).
class MemFile {
 public:
  MemFile(const void* data, size_t size) : fd_(::memfd_create("cairn-fuzz", MFD_CLOEXEC)) {
    FUZZ_CHECK(fd_ >= 0, "memfd_create");
    const char* p = static_cast<const char*>(data);
    for (size_t left = size; left > 0;) {
      const ssize_t n = ::write(fd_, p, left);
      FUZZ_CHECK(n > 0, "write to memfd");
      p += n;
      left -= size_t(n);
    }
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  int fd() const { return fd_; }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_;
};

}  // namespace cairn::fuzz
