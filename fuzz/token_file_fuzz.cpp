// Token files (data/token_file.h) through TokenFile::Open, from memory (a memfd). Each input is
// opened as it is, and, when it is long enough to have a header, again with the header's
// checksum set to its payload's, so that the checks after the checksum (the ids) are reached
// too. A file that opens must be entirely readable through at() and copy_to(), every id below
// the vocabulary size.
#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cairn/data/token_file.h"
#include "fuzz_check.h"

namespace {

constexpr size_t kHashAt = 28;

void open_and_read(const std::string& bytes) {
  cairn::fuzz::MemFile file(bytes.data(), bytes.size());
  auto f = cairn::data::TokenFile::Open(file.path());
  if (!f.ok()) {
    FUZZ_CHECK(f.status().message().find(file.path()) != std::string::npos,
               "error does not name the file: " + f.status().ToString());
    return;
  }
  const cairn::data::TokenFile& t = **f;
  FUZZ_CHECK(t.size() >= 0 && t.vocab_size() > 0, "bad size or vocabulary");
  FUZZ_CHECK(uint64_t(t.size()) <= (bytes.size() - cairn::data::kTokenFileHeaderBytes) / 2,
             "more ids than the payload holds");
  std::vector<int64_t> all(size_t(t.size()));
  t.copy_to(0, t.size(), all.data());
  for (int64_t i = 0; i < t.size(); ++i) {
    const int32_t id = t.at(i);
    FUZZ_CHECK(id >= 0 && id < t.vocab_size(), "id " + std::to_string(id) + " out of range");
    FUZZ_CHECK(all[size_t(i)] == id, "copy_to and at differ");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  open_and_read(bytes);
  if (bytes.size() >= cairn::data::kTokenFileHeaderBytes) {
    const size_t header = cairn::data::kTokenFileHeaderBytes;
    const uint64_t hash = XXH3_64bits(bytes.data() + header, bytes.size() - header);
    for (int i = 0; i < 8; ++i) bytes[kHashAt + i] = char(hash >> (8 * i));
    open_and_read(bytes);
  }
  return 0;
}
