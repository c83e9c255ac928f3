// Private pieces of the checkpoint format: data-file header, names, manifest validation.
// Torch-free (the front binary's `cairn ckpt inspect`); torch_dtype_impl.h maps dtype names to
// libtorch's.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cairn/ckpt/layout.h"
#include "cairn/core/status.h"

namespace cairn::ckpt {

inline constexpr char kFormatName[] = "cairn-checkpoint";
inline constexpr char kDataMagic[8] = {'C', 'A', 'I', 'R', 'N', 'C', 'K', 'D'};
inline constexpr uint32_t kDataVersion = 1;
inline constexpr int64_t kDataHeaderBytes = 64;
inline constexpr int64_t kAlign = 64;

// First 64 bytes of every rank-<R>.bin (little-endian).
struct DataHeader {
  char magic[8];
  uint32_t version;
  uint32_t rank;
  uint64_t payload_bytes;
  char reserved[40];
};
static_assert(sizeof(DataHeader) == kDataHeaderBytes);

inline int64_t align_up(int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

DataHeader make_data_header(int rank, int64_t payload_bytes);
// Reads and checks the header of an open data file.
Status check_data_header(int fd, const std::string& path);

std::string hex64(uint64_t v);
// Bytes per element of a manifest dtype name ("float32": 4), 0 for a name the format does not
// define.
int64_t dtype_itemsize(const std::string& name);

std::string step_dir_name(int64_t step);  // "step-00000042"
bool parse_step_dir_name(const std::string& name, int64_t* step);
std::string data_file_name(int rank);      // "rank-00000.bin"
std::string part_file_name(int rank);      // "rank-00000.part.json": a rank's tensor entries
std::string parts_dir_name(int64_t step);  // ".parts-step-00000042": a step being assembled

struct ShardEntry {
  std::vector<std::pair<int64_t, int64_t>> slice;  // [begin, end) per dimension
  std::string file;
  int64_t offset = 0;
  int64_t bytes = 0;
  std::string xxh3;
};

struct TensorEntry {
  std::string name;
  std::string dtype;  // a name dtype_itemsize() knows
  int64_t itemsize = 0;
  std::vector<int64_t> shape;
  std::vector<ShardEntry> shards;
};

// Checks format name, version and the presence of the top-level fields.
Status validate_manifest(const nlohmann::json& j, const std::string& where);
// Parses and checks the tensor list: known dtypes, slices inside shapes, bytes matching
// slice sizes, shards covering each tensor exactly, file names without path separators.
Result<std::vector<TensorEntry>> parse_entries(const nlohmann::json& j, const std::string& where);

}  // namespace cairn::ckpt
