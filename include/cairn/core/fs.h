// Small file-system helpers with the project's durability rules: a file is written to a
// temporary name, fsynced and renamed, so readers see either the old or the new content.
#pragma once

#include <string>
#include <string_view>

#include "cairn/core/status.h"

namespace cairn::core {

Result<std::string> read_file(const std::string& path);
// Writes `data` to `path` atomically and durably (temp file, fsync, rename, fsync dir).
Status write_file_atomic(const std::string& path, std::string_view data);
// fsync a directory so that a rename inside it is durable.
Status fsync_dir(const std::string& dir);
// mkdir -p.
Status make_dirs(const std::string& dir);
// Appends one line (a '\n' is added) with O_APPEND; safe across processes for short lines.
Status append_line(const std::string& path, std::string_view line);
// An IoError "<what> <path>: <strerror(errno)>".
Status errno_status(const std::string& what, const std::string& path);
// Writes all n bytes to fd (retrying short writes and EINTR); `path` names it in errors.
Status write_all(int fd, const void* data, size_t n, const std::string& path);
// Current wall-clock time in unix seconds with sub-second precision.
double unix_time();

}  // namespace cairn::core
