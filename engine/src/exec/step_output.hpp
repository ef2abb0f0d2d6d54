#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "exec/output.hpp"

namespace runbookd::exec {

struct ProcessResult;

// The stdout and stderr of one attempt as runbookd reads them: every chunk goes through the
// secret redactor, then into the bounded excerpts and byte counts, and into the attempt's
// output file (created with the first byte, up to its cap). Exec steps (the ProcessRunner) and
// Python steps (the pipes runbookd hands a worker for one step) share it, so both are recorded
// alike (docs/execution.md, Output).
//
// Thread model: everything, callbacks included, on the io_context's thread.
class StepOutput : public std::enable_shared_from_this<StepOutput> {
  public:
    struct Options {
        std::size_t excerpt_bytes = 8192;  // per stream, split between head and tail
        std::vector<std::pair<std::string, std::string>> redact;  // (name, value)
        std::string output_path;                                  // empty: no output file
        std::int64_t output_cap_bytes = 16 << 20;
        std::string log_context;  // "run=4 step=df attempt=1 " (trailing space), or empty
    };
    // Something worth an attempt transition: "output_truncated" and its detail.
    using Note = std::function<void(std::string kind, std::string detail)>;

    StepOutput(boost::asio::io_context& io, Options options, Note note);
    ~StepOutput();
    StepOutput(const StepOutput&) = delete;
    StepOutput& operator=(const StepOutput&) = delete;

    // Reads the two read ends, owned from here on; `closed` runs once both have reached
    // end-of-file, unless close() came first.
    void start(int stdout_fd, int stderr_fd, std::function<void()> closed);
    bool open() const { return out_.open || err_.open; }
    // Stops reading (whatever a writer still holds open is dropped), releases what the
    // redactors held back and closes the output file. Harmless to call more than once.
    void close();
    // The excerpts, byte counts and output file fields, into `result` (after close()).
    void fill(ProcessResult& result) const;

  private:
    struct Stream {
        Stream(boost::asio::io_context& io, std::size_t excerpt_bytes,
               const std::vector<std::pair<std::string, std::string>>& secrets)
            : pipe(io),
              capture(excerpt_bytes / 2, excerpt_bytes - excerpt_bytes / 2),
              redactor(secrets) {}
        boost::asio::posix::stream_descriptor pipe;
        OutputCapture capture;
        Redactor redactor;
        std::array<char, 16384> buffer{};
        bool open = false;
    };

    void read(Stream& stream);
    void take(Stream& stream, std::string_view chunk);
    void end(Stream& stream);
    void store(std::string_view data);
    void open_file();
    void close_file();

    Options options_;
    Note note_;
    std::function<void()> closed_;
    Stream out_;
    Stream err_;
    int file_fd_ = -1;
    bool file_tried_ = false;
    bool closing_ = false;
    std::string file_path_;  // set once the file was tried
    std::int64_t stored_bytes_ = 0;
    bool truncated_ = false;
    std::string file_error_;
};

}  // namespace runbookd::exec
