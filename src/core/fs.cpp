// File helpers: atomic durable writes, whole-file reads, appends.
#include "cairn/core/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace cairn::core {
Status errno_status(const std::string& what, const std::string& path) {
  return Status::IoError(what + " " + path + ": " + std::strerror(errno));
}

Status write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno_status("cannot write", path);
    }
    p += w;
    n -= size_t(w);
  }
  return Status::Ok();
}

Result<std::string> read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    return Status::InvalidArgument(path + " is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path)) return Status::NotFound(path + ": no such file");
    return errno_status("cannot open", path);
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return errno_status("cannot read", path);
  return ss.str();
}

bool is_contained_relative_path(const std::string& relative) {
  if (relative.empty() || relative.front() == '/') return false;
  size_t start = 0;
  while (start <= relative.size()) {
    size_t end = relative.find('/', start);
    if (end == std::string::npos) end = relative.size();
    if (relative.compare(start, end - start, "..") == 0 && end - start == 2) return false;
    start = end + 1;
  }
  return true;
}

Result<int> open_under(const std::string& root, const std::string& relative) {
  const std::string path = root + "/" + relative;
  if (!is_contained_relative_path(relative))
    return Status::InvalidArgument(path + ": '" + relative + "' leaves " + root);
  int dir = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) {
    if (errno == ENOENT) return Status::NotFound(root + ": no such directory");
    return errno_status("cannot open directory", root);
  }
  size_t start = 0;
  for (;;) {
    size_t end = relative.find('/', start);
    const bool last = end == std::string::npos;
    const std::string part = relative.substr(start, last ? std::string::npos : end - start);
    if (part.empty() || part == ".") {
      if (last) break;
      start = end + 1;
      continue;
    }
    const int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (last ? 0 : O_DIRECTORY);
    const int next = ::openat(dir, part.c_str(), flags);
    const int err = errno;
    ::close(dir);
    if (next < 0) {
      if (err == ELOOP || (err == ENOTDIR && !last))
        return Status::InvalidArgument(path + ": '" + part +
                                       "' is a symbolic link (or not a directory); links are not "
                                       "followed out of " +
                                       root);
      if (err == ENOENT) return Status::NotFound(path + ": no such file");
      errno = err;
      return errno_status("cannot open", path);
    }
    dir = next;
    if (last) break;
    start = end + 1;
  }
  struct stat st {};
  if (::fstat(dir, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(dir);
    return Status::InvalidArgument(path + " is not a regular file");
  }
  return dir;
}

Result<std::string> read_file_under(const std::string& root, const std::string& relative) {
  CAIRN_ASSIGN_OR_RETURN(const int fd, open_under(root, relative));
  struct stat st {};
  ::fstat(fd, &st);
  std::string out(size_t(st.st_size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += size_t(n);
  }
  ::close(fd);
  if (done != out.size()) return errno_status("cannot read", root + "/" + relative);
  return out;
}

Status require_real_directory(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::NotFound(path + ": no such directory");
    return errno_status("cannot stat", path);
  }
  if (S_ISLNK(st.st_mode))
    return Status::InvalidArgument(path +
                                   " is a symbolic link; cairn does not follow links it did not "
                                   "make (files written there would land elsewhere)");
  if (!S_ISDIR(st.st_mode)) return Status::InvalidArgument(path + " is not a directory");
  return Status::Ok();
}

Status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return errno_status("cannot open directory", dir);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return errno_status("cannot fsync directory", dir);
  return Status::Ok();
}

Status write_file_atomic(const std::string& path, std::string_view data) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno_status("cannot create", tmp);
  if (Status s = write_all(fd, data.data(), data.size(), tmp); !s.ok()) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  }
  if (::fsync(fd) != 0) {
    Status s = errno_status("cannot fsync", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = errno_status("cannot rename to", path);
    ::unlink(tmp.c_str());
    return s;
  }
  return fsync_dir(std::filesystem::path(path).parent_path().string());
}

Status make_dirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IoError("cannot create directory " + dir + ": " + ec.message());
  return Status::Ok();
}

Status append_line(const std::string& path, std::string_view line) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return errno_status("cannot open", path);
  std::string buf(line);
  buf += '\n';
  ssize_t n = ::write(fd, buf.data(), buf.size());
  Status s = n == ssize_t(buf.size()) ? Status::Ok() : errno_status("cannot append to", path);
  ::close(fd);
  return s;
}

double unix_time() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

}  // namespace cairn::core
