#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace runbookd::exec {

// Keeps the first and last bytes of a stream and counts the rest, so that memory per attempt
// stays bounded whatever a child writes.
class OutputCapture {
  public:
    // Keeps up to `head_bytes` from the start and `tail_bytes` from the end.
    OutputCapture(std::size_t head_bytes, std::size_t tail_bytes);

    void append(std::string_view data);

    // The head, then (when bytes were dropped) a marker line naming how many, then the tail.
    // Bytes are kept as written: the excerpt may hold invalid UTF-8.
    std::string excerpt() const;
    std::int64_t total_bytes() const { return total_; }

  private:
    std::size_t head_limit_;
    std::size_t tail_limit_;
    std::string head_;
    std::string tail_;            // ring buffer once full
    std::size_t tail_start_ = 0;  // index of the oldest byte in tail_
    std::int64_t total_ = 0;
};

}  // namespace runbookd::exec
