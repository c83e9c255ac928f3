// Token files: a versioned binary file of token ids, memory-mapped for reading.
//
// Layout (all little-endian):
//   offset  0  char[8]  magic "CAIRNTOK"
//           8  u32      version (1)
//          12  u32      vocab_size
//          16  u32      dtype: bytes per id, 2 (uint16, used when vocab_size <= 65536) or 4
//          (uint32) 20  u64      count of ids 28  u64      XXH3-64 (seed 0) of the payload bytes 36
//          zero padding up to 64 64  payload: count ids of dtype
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::data {

constexpr uint32_t kTokenFileVersion = 1;
constexpr size_t kTokenFileHeaderBytes = 64;

// Writes `ids` to `path` atomically and durably (temporary file, fsync, rename, fsync of the
// directory): readers see the old file or the complete new one. Every id must be in
// [0, vocab_size) (else kInvalidArgument, nothing written).
Status write_token_file(const std::string& path, const std::vector<int32_t>& ids,
                        int32_t vocab_size);

// A validated, read-only, memory-mapped token file. Open checks the magic, version, dtype,
// the file size against the count, the checksum and that every id is below vocab_size, so a
// file that opens is entirely usable. Thread-safe for concurrent readers.
class TokenFile {
 public:
  // kNotFound if missing; kCorrupt for a bad magic, truncation, a checksum mismatch or an id
  // out of range; kUnsupported for another version or dtype. Messages name the file.
  static Result<std::unique_ptr<TokenFile>> Open(const std::string& path);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  int64_t size() const { return count_; }
  int32_t vocab_size() const { return vocab_size_; }
  const std::string& path() const { return path_; }

  // REQUIRES: 0 <= i < size(); throws std::out_of_range otherwise.
  int32_t at(int64_t i) const;
  // Copies ids [start, start + n) to out[0, n). REQUIRES: the range lies within [0, size());
  // throws std::out_of_range otherwise.
  void copy_to(int64_t start, int64_t n, int64_t* out) const;

 private:
  TokenFile() = default;
  std::string path_;
  void* map_ = nullptr;  // whole file, munmap'ed by the destructor
  size_t map_bytes_ = 0;
  const unsigned char* payload_ = nullptr;
  int64_t count_ = 0;
  int32_t vocab_size_ = 0;
  uint32_t dtype_ = 0;
};

}  // namespace cairn::data
