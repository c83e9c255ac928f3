// The safetensors file format, for exchanging weights with other tools:
//
//   u64 little-endian N | N bytes of JSON header | raw little-endian tensor data
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the start of the data) and may hold "__metadata__", a map of strings
// to strings. The header is padded with spaces so the data starts 8-byte aligned.
// Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
#pragma once

#include <torch/types.h>

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::ckpt {

struct SafetensorsContents {
  std::map<std::string, torch::Tensor> tensors;  // contiguous CPU tensors owning their memory
  std::map<std::string, std::string> metadata;   // the "__metadata__" entries
};

// Writes `tensors` (any device, any layout; stored contiguous, in the order given) and
// `metadata` to `path` atomically and durably (temporary file, fsync, rename).
// kInvalidArgument for an empty, duplicate or reserved ("__metadata__") name or an
// unsupported dtype; kIoError when the file cannot be written.
Status write_safetensors(const std::string& path,
                         const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

// Reads and validates a whole file. kNotFound / kIoError when it cannot be read; kCorrupt
// (naming the file and the problem) when the header length, JSON, dtypes, shapes or offsets
// are inconsistent; kUnsupported for a well-formed dtype cairn does not handle.
Result<SafetensorsContents> read_safetensors_file(const std::string& path);

// Tensors only, from read_safetensors_file().
Result<std::map<std::string, torch::Tensor>> read_safetensors(const std::string& path);

// The in-memory forms of the two above; `origin` names the source in messages.
Result<std::string> encode_safetensors(
    const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
    const std::map<std::string, std::string>& metadata);
Result<SafetensorsContents> decode_safetensors(std::string_view bytes,
                                               const std::string& origin = "safetensors");

}  // namespace cairn::ckpt
