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

Redactor::Redactor(std::vector<std::pair<std::string, std::string>> secrets) {
    for (auto& s : secrets) {
        if (!s.second.empty()) {
            secrets_.push_back(std::move(s));
        }
    }
    std::stable_sort(secrets_.begin(), secrets_.end(), [](const auto& a, const auto& b) {
        return a.second.size() > b.second.size();
    });
}

std::string Redactor::feed(std::string_view data) {
    if (!active()) {
        return std::string(data);
    }
    return redact(data, false);
}

std::string Redactor::finish() {
    return redact({}, true);
}

std::string Redactor::redact(std::string_view data, bool final) {
    std::string text = std::move(pending_);
    pending_.clear();
    text.append(data);
    std::string out;
    out.reserve(text.size());
    std::size_t i = 0;
    while (i < text.size()) {
        const std::string_view rest = std::string_view(text).substr(i);
        const std::pair<std::string, std::string>* match = nullptr;
        bool maybe_longer = false;
        for (const auto& s : secrets_) {
            const std::string_view value = s.second;
            if (rest.front() != value.front()) {
                continue;
            }
            if (rest.size() >= value.size()) {
                if (rest.substr(0, value.size()) == value) {
                    match = &s;
                    break;
                }
            } else if (!final && value.substr(0, rest.size()) == rest) {
                // A longer value may start here; only the next chunk can tell.
                maybe_longer = true;
                break;
            }
        }
        if (maybe_longer) {
            pending_.assign(rest);
            break;
        }
        if (match != nullptr) {
            out += "[secret:" + match->first + "]";
            i += match->second.size();
        } else {
            out += text[i];
            ++i;
        }
    }
    return out;
}

std::string output_file_path(std::string_view dir, std::int64_t run, int step_index, int attempt) {
    return fmt::format("{}/{}/{}-{}.log", dir, run, step_index, attempt);
}

}  // namespace runbookd::exec
