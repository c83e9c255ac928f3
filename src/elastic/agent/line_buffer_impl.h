// Splitting a byte stream into whole lines, and keeping the last few lines for failure reports.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::elastic {

// Accumulates bytes and hands out complete lines (without '\n'). A line longer than
// `max_line` is handed out in pieces of `max_line` bytes so memory stays bounded.
class LineBuffer {
 public:
  explicit LineBuffer(size_t max_line = 64 * 1024) : max_line_(max_line > 0 ? max_line : 1) {}

  // Calls `emit` for every line completed by `data`, in order.
  void feed(std::string_view data, const std::function<void(std::string_view)>& emit);
  // Calls `emit` for a pending partial line (the stream ended without '\n'), if any.
  void flush(const std::function<void(std::string_view)>& emit);
  bool empty() const { return pending_.empty(); }

 private:
  size_t max_line_;
  std::string pending_;
};

// The last `capacity` lines pushed.
class LineTail {
 public:
  explicit LineTail(size_t capacity) : capacity_(capacity) {}
  void push(std::string_view line);
  std::vector<std::string> lines() const { return {lines_.begin(), lines_.end()}; }
  void clear() { lines_.clear(); }

 private:
  size_t capacity_;
  std::deque<std::string> lines_;
};

}  // namespace cairn::elastic
