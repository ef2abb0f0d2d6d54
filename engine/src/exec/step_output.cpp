#include "exec/step_output.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <boost/asio/buffer.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.hpp"
#include "exec/process.hpp"

namespace runbookd::exec {
namespace {

namespace asio = boost::asio;

// Creates the missing directories of `dir`, each 0750.
int make_parents(const std::filesystem::path& dir) {
    std::filesystem::path partial;
    for (const auto& part : dir) {
        partial /= part;
        if (::mkdir(partial.c_str(), 0750) != 0 && errno != EEXIST) {
            return errno;
        }
    }
    return 0;
}

}  // namespace

StepOutput::StepOutput(asio::io_context& io, Options options, Note note)
    : options_(std::move(options)),
      note_(std::move(note)),
      out_(io, options_.excerpt_bytes, options_.redact),
      err_(io, options_.excerpt_bytes, options_.redact) {}

StepOutput::~StepOutput() {
    close_file();
}

void StepOutput::start(int stdout_fd, int stderr_fd, std::function<void()> closed) {
    closed_ = std::move(closed);
    // A descriptor that could not be had (no descriptor left) counts as a closed stream.
    for (auto [stream, fd] : {std::pair{&out_, stdout_fd}, std::pair{&err_, stderr_fd}}) {
        if (fd >= 0) {
            stream->pipe.assign(fd);
            stream->open = true;
        }
    }
    for (Stream* stream : {&out_, &err_}) {
        if (stream->open) {
            read(*stream);
        }
    }
}

void StepOutput::read(Stream& stream) {
    stream.pipe.async_read_some(
        asio::buffer(stream.buffer),
        [self = shared_from_this(), &stream](const boost::system::error_code& e, std::size_t n) {
            if (self->closing_) {
                return;
            }
            if (n > 0) {
                self->take(stream, std::string_view(stream.buffer.data(), n));
            }
            if (e) {
                self->end(stream);
                stream.open = false;
                if (!self->open() && self->closed_) {
                    auto closed = std::move(self->closed_);
                    self->closed_ = nullptr;
                    closed();
                }
                return;
            }
            self->read(stream);
        });
}

// Output goes through the stream's redactor before anything keeps it: no secret value reaches
// the excerpts or the file.
void StepOutput::take(Stream& stream, std::string_view chunk) {
    if (!stream.redactor.active()) {
        stream.capture.append(chunk);
        store(chunk);
        return;
    }
    const std::string clean = stream.redactor.feed(chunk);
    stream.capture.append(clean);
    store(clean);
}

// Releases what the redactor held back; harmless to call more than once.
void StepOutput::end(Stream& stream) {
    if (stream.redactor.active()) {
        const std::string rest = stream.redactor.finish();
        if (!rest.empty()) {
            stream.capture.append(rest);
            store(rest);
        }
    }
}

void StepOutput::close() {
    if (closing_) {
        return;
    }
    closing_ = true;
    closed_ = nullptr;
    boost::system::error_code ignored;
    out_.pipe.close(ignored);
    err_.pipe.close(ignored);
    out_.open = false;
    err_.open = false;
    end(out_);
    end(err_);
    close_file();
}

void StepOutput::fill(ProcessResult& result) const {
    result.stdout_excerpt = out_.capture.excerpt();
    result.stderr_excerpt = err_.capture.excerpt();
    result.stdout_bytes = out_.capture.total_bytes();
    result.stderr_bytes = err_.capture.total_bytes();
    result.output_path = file_path_;
    result.output_stored_bytes = stored_bytes_;
    result.output_truncated = truncated_;
    result.output_error = file_error_;
}

void StepOutput::open_file() {
    if (options_.output_path.empty()) {
        return;
    }
    file_path_ = options_.output_path;
    const std::filesystem::path path(options_.output_path);
    int err = path.has_parent_path() ? make_parents(path.parent_path()) : 0;
    if (err == 0) {
        file_fd_ = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0640);
        err = file_fd_ < 0 ? errno : 0;
    }
    if (err != 0) {
        file_error_ = fmt::format("cannot create output file {}: {}", options_.output_path,
                                  std::strerror(err));
        log::get("exec")->warn("output file not written {}path={} error={}", options_.log_context,
                               log::quote(options_.output_path), log::quote(std::strerror(err)));
    }
}

void StepOutput::store(std::string_view data) {
    // Created with the first byte: a step that prints nothing costs no directory and no file.
    if (!file_tried_) {
        file_tried_ = true;
        open_file();
    }
    if (file_fd_ < 0) {
        return;
    }
    const std::int64_t room = std::max<std::int64_t>(0, options_.output_cap_bytes - stored_bytes_);
    const auto keep = static_cast<std::size_t>(
        std::min<std::int64_t>(room, static_cast<std::int64_t>(data.size())));
    std::string_view rest = data.substr(0, keep);
    while (!rest.empty()) {
        const ssize_t n = ::write(file_fd_, rest.data(), rest.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            const int err = errno;
            file_error_ = fmt::format("writing output file {} failed: {}", options_.output_path,
                                      std::strerror(err));
            log::get("exec")->warn("output file write failed {}path={} error={}",
                                   options_.log_context, log::quote(options_.output_path),
                                   log::quote(std::strerror(err)));
            close_file();
            return;
        }
        stored_bytes_ += n;
        rest.remove_prefix(static_cast<std::size_t>(n));
    }
    if (keep < data.size() && !truncated_) {
        truncated_ = true;
        if (note_) {
            note_("output_truncated",
                  fmt::format("output file {} reached its cap of {} bytes; later output is "
                              "counted, not stored",
                              options_.output_path, options_.output_cap_bytes));
        }
    }
}

void StepOutput::close_file() {
    if (file_fd_ >= 0) {
        ::close(file_fd_);
        file_fd_ = -1;
    }
}

}  // namespace runbookd::exec
