// Small file-system helpers with the project's durability rules: a file is written to a
// temporary name, fsynced and renamed, so readers see either the old or the new content.
#pragma once

#include <string>
#include <string_view>

#include "cairn/core/status.h"

namespace cairn::core {

Result<std::string> read_file(const std::string& path);
// Reads `root`/`relative` without leaving `root`: `relative` must be a relative path without
// ".." components, and no symbolic link below `root` is followed (every component is opened
// with O_NOFOLLOW; `root` itself may be a link). InvalidArgument naming the path when it would
// leave its root, NotFound when it does not exist. For names read from files others can write
// (a manifest's data files, a run directory's logs).
Result<std::string> read_file_under(const std::string& root, const std::string& relative);
// The same walk, returning the open file's descriptor (O_RDONLY; the caller closes it).
Result<int> open_under(const std::string& root, const std::string& relative);
// Ok when `path` is a directory and not a symbolic link (one planted where cairn writes would
// send its files elsewhere); InvalidArgument naming it otherwise, NotFound when it is absent.
Status require_real_directory(const std::string& path);
// Whether `relative` stays below the directory it is relative to: not empty, not absolute, no
// ".." component.
bool is_contained_relative_path(const std::string& relative);
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
