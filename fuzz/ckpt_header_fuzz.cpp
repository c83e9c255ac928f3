// The header of a checkpoint data file (rank-<R>.bin) through check_data_header, from memory (a
// memfd). A header it accepts has the magic, a version this build reads, and a payload that the
// file really holds.
#include <cstdint>
#include <cstring>
#include <string>

#include "ckpt/format_impl.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cairn::fuzz::MemFile file(data, size);
  const cairn::Status s = cairn::ckpt::check_data_header(file.fd(), "ckpt/rank-00000.bin");
  if (!s.ok()) {
    FUZZ_CHECK(s.message().find("rank-00000.bin") != std::string::npos, s.ToString());
    return 0;
  }
  cairn::ckpt::DataHeader h;
  FUZZ_CHECK(size >= sizeof(h), "a file shorter than the header accepted");
  std::memcpy(&h, data, sizeof(h));
  FUZZ_CHECK(std::memcmp(h.magic, cairn::ckpt::kDataMagic, sizeof(h.magic)) == 0, "bad magic");
  FUZZ_CHECK(h.version <= cairn::ckpt::kDataVersion, "a newer version accepted");
  FUZZ_CHECK(__int128(size) >= __int128(cairn::ckpt::kDataHeaderBytes) + h.payload_bytes,
             "a payload of " + std::to_string(h.payload_bytes) + " bytes in a " +
                 std::to_string(size) + "-byte file accepted");
  return 0;
}
