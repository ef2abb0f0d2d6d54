#include "exec/output.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace runbookd::exec {

OutputCapture::OutputCapture(std::size_t head_bytes, std::size_t tail_bytes)
    : head_limit_(head_bytes), tail_limit_(tail_bytes) {}

void OutputCapture::append(std::string_view data) {
    total_ += static_cast<std::int64_t>(data.size());
    if (head_.size() < head_limit_) {
        const std::size_t take = std::min(head_limit_ - head_.size(), data.size());
        head_.append(data.substr(0, take));
        data.remove_prefix(take);
    }
    if (tail_limit_ == 0 || data.empty()) {
        return;
    }
    if (data.size() >= tail_limit_) {
        tail_.assign(data.substr(data.size() - tail_limit_));
        tail_start_ = 0;
        return;
    }
    if (tail_.size() < tail_limit_) {
        const std::size_t take = std::min(tail_limit_ - tail_.size(), data.size());
        tail_.append(data.substr(0, take));
        data.remove_prefix(take);
    }
    for (const char c : data) {
        tail_[tail_start_] = c;
        tail_start_ = (tail_start_ + 1) % tail_limit_;
    }
}

std::string OutputCapture::excerpt() const {
    std::string out = head_;
    const auto kept = static_cast<std::int64_t>(head_.size() + tail_.size());
    if (total_ > kept) {
        out += fmt::format("\n[... {} bytes omitted ...]\n", total_ - kept);
    }
    out.append(tail_, tail_start_, std::string::npos);
    out.append(tail_, 0, tail_start_);
    return out;
}

}  // namespace runbookd::exec
