// Line splitting for worker output.
#include "elastic/agent/line_buffer_impl.h"

namespace cairn::elastic {

void LineBuffer::feed(std::string_view data, const std::function<void(std::string_view)>& emit) {
  while (!data.empty()) {
    const size_t nl = data.find('\n');
    const size_t line_len = nl == std::string_view::npos ? data.size() : nl;
    if (pending_.size() + line_len > max_line_) {
      // Too long: hand out max_line_ bytes as a line of their own.
      const size_t room = max_line_ - pending_.size();
      pending_.append(data.substr(0, room));
      emit(pending_);
      pending_.clear();
      data.remove_prefix(room);
      continue;
    }
    if (nl == std::string_view::npos) {
      pending_.append(data);
      return;
    }
    pending_.append(data.substr(0, nl));
    emit(pending_);
    pending_.clear();
    data.remove_prefix(nl + 1);
  }
}

void LineBuffer::flush(const std::function<void(std::string_view)>& emit) {
  if (pending_.empty()) return;
  emit(pending_);
  pending_.clear();
}

void LineTail::push(std::string_view line) {
  if (capacity_ == 0) return;
  if (lines_.size() == capacity_) lines_.pop_front();
  lines_.emplace_back(line);
}

}  // namespace cairn::elastic
