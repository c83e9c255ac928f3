// A token stream: a file of token ids that a writer is still appending to (`cairn data stream`),
// the online-learning source of dynamic sharding.
//
//   <dir>/train.stream        little-endian uint32 ids, appended; only whole ids count
//   <dir>/train.stream.done   written (atomically) when the writer has closed the stream:
//                             {"format": "cairn-token-stream", "version": 1, "tokens": N}
//
// Sample s is tokens [s*T, s*T + T + 1), as in a token file; samples() counts the ones the
// stream holds so far.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "cairn/core/status.h"

namespace cairn::data {

inline constexpr char kStreamFile[] = "train.stream";
inline constexpr char kStreamDoneFile[] = "train.stream.done";

class TokenStream {
 public:
  // kNotFound when <dir>/train.stream does not exist (yet).
  static Result<std::unique_ptr<TokenStream>> Open(const std::string& dir, int32_t vocab_size);
  ~TokenStream();
  TokenStream(const TokenStream&) = delete;
  TokenStream& operator=(const TokenStream&) = delete;

  // Ids the stream holds now (whole ones).
  Result<int64_t> tokens() const;
  // Samples of seq_len (+1 target) the stream holds now.
  Result<int64_t> samples(int64_t seq_len) const;
  // Whether the writer has closed the stream; kCorrupt when the marker's count does not match
  // the file.
  Result<bool> closed() const;
  // Inputs (T ids) and targets (T ids) of sample `sample`. kFailedPrecondition beyond the stream,
  // kCorrupt for an id >= vocab_size.
  Status fill(int64_t sample, int64_t seq_len, int64_t* inputs, int64_t* targets) const;
  const std::string& dir() const { return dir_; }

 private:
  TokenStream(std::string dir, int fd, int32_t vocab)
      : dir_(std::move(dir)), fd_(fd), vocab_(vocab) {}
  std::string dir_;
  int fd_;
  int32_t vocab_;
};

// Appends ids to <dir>/train.stream (creating it), for the writer.
class TokenStreamWriter {
 public:
  static Result<std::unique_ptr<TokenStreamWriter>> Create(const std::string& dir);
  ~TokenStreamWriter();
  Status append(const int32_t* ids, size_t n);
  // Flushes and writes the .done marker: the stream is closed.
  Status close();
  int64_t tokens() const { return tokens_; }

 private:
  TokenStreamWriter(std::string dir, int fd) : dir_(std::move(dir)), fd_(fd) {}
  std::string dir_;
  int fd_;
  int64_t tokens_ = 0;
};

}  // namespace cairn::data
