#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

// Replaces every occurrence of a secret value in a stream by "[secret:NAME]", also when the
// value is split across chunks: bytes that could be the start of a value are held back until
// the next chunk (or the end) shows whether they are. Where values overlap, the longest one
// that matches wins. One per stream; not thread-safe.
class Redactor {
  public:
    // (name, value) pairs; empty values are ignored.
    explicit Redactor(std::vector<std::pair<std::string, std::string>> secrets);

    bool active() const { return !secrets_.empty(); }
    // The redacted text that can be passed on now.
    std::string feed(std::string_view data);
    // The end of the stream: whatever was held back, redacted.
    std::string finish();

  private:
    std::string redact(std::string_view data, bool final);

    std::vector<std::pair<std::string, std::string>> secrets_;  // longest value first
    std::string pending_;
};

// Where an attempt's full output is kept: <dir>/<run>/<step index>-<attempt>.log, one file per
// attempt, never reused. Step executors write it; a follower of the run reads it as it grows.
std::string output_file_path(std::string_view dir, std::int64_t run, int step_index, int attempt);

}  // namespace runbookd::exec
