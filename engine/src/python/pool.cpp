#include "python/pool.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.hpp"
#include "metrics/runbookd_metrics.hpp"

namespace runbookd::python {
namespace {

namespace asio = boost::asio;

constexpr std::size_t kMaxFrame = 16U << 20;
constexpr exec::Millis kExitGrace{1'000};  // `exit` sent → SIGKILL
// A worker that closed its channel without exiting is stopped after this.
constexpr exec::Millis kLingerAfterClose{1'000};
constexpr exec::Millis kFirstRestart{1'000};
constexpr exec::Millis kMaxRestart{30'000};
constexpr int kProtocol = 1;

std::string frame(const nlohmann::json& message) {
    const std::string body = message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    const auto n = static_cast<std::uint32_t>(body.size());
    std::string out;
    out.reserve(body.size() + 4);
    out += static_cast<char>((n >> 24) & 0xff);
    out += static_cast<char>((n >> 16) & 0xff);
    out += static_cast<char>((n >> 8) & 0xff);
    out += static_cast<char>(n & 0xff);
    out += body;
    return out;
}

// Sends the first byte of `bytes` with `fds` attached; returns what sendmsg returns.
ssize_t send_with_fds(int socket, const std::string& bytes, const std::vector<int>& fds) {
    char byte = bytes[0];
    iovec iov{&byte, 1};
    std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()), 0);
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    return ::sendmsg(socket, &msg, MSG_NOSIGNAL);
}

}  // namespace

std::string describe_worker_end(const exec::ProcessResult& result) {
    switch (result.ending) {
        case exec::ProcessResult::Ending::Exited:
            return fmt::format("python worker died: exited with status {}", result.exit_code);
        case exec::ProcessResult::Ending::Signaled:
            return fmt::format("python worker died: killed by signal {} ({})", result.signal,
                               exec::signal_name(result.signal));
        case exec::ProcessResult::Ending::SpawnFailed:
            break;
    }
    return "python worker could not start: " + result.error;
}

Worker::Worker(Pool& pool, int channel)
    : pool_(pool), channel_(pool.io_, channel), timer_(pool.io_) {}

Worker::~Worker() {
    close_pending_fds();
}

void Worker::close_pending_fds() {
    for (auto& out : outbox_) {
        for (const int fd : out.fds) {
            ::close(fd);
        }
        out.fds.clear();
    }
}

void Worker::spawned(std::shared_ptr<exec::ProcessHandle> handle) {
    handle_ = std::move(handle);
    pid_ = handle_->pid();
    boost::system::error_code ignored;
    channel_.non_blocking(true, ignored);
    read();
    timer_.expires_after(pool_.options_.startup_timeout);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e && self->state_ == State::Starting) {
            self->stop(fmt::format("no hello within python.startup_timeout ({} ms)",
                                   self->pool_.options_.startup_timeout.count()),
                       exec::Millis(0));
        }
    });
}

std::int64_t Worker::begin_step(std::shared_ptr<StepChannel> channel) {
    step_ = std::move(channel);
    state_ = State::Busy;
    ++steps_run_;
    return next_step_++;
}

void Worker::send(const nlohmann::json& message, std::vector<int> fds) {
    if (channel_closed_ || state_ == State::Gone) {
        for (const int fd : fds) {
            ::close(fd);
        }
        return;
    }
    outbox_.push_back(Outgoing{frame(message), std::move(fds), 0});
    flush();
}

void Worker::flush() {
    if (writing_) {
        return;
    }
    const int socket = channel_.native_handle();
    while (!outbox_.empty()) {
        Outgoing& out = outbox_.front();
        ssize_t n = 0;
        if (out.sent == 0 && !out.fds.empty()) {
            n = send_with_fds(socket, out.bytes, out.fds);
            if (n > 0) {
                // In flight now: the worker holds its own copies.
                for (const int fd : out.fds) {
                    ::close(fd);
                }
                out.fds.clear();
            }
        } else {
            n = ::send(socket, out.bytes.data() + out.sent, out.bytes.size() - out.sent,
                       MSG_NOSIGNAL);
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            writing_ = true;
            channel_.async_wait(asio::posix::stream_descriptor::wait_write,
                                [self = shared_from_this()](const boost::system::error_code& e) {
                                    self->writing_ = false;
                                    if (!e) {
                                        self->flush();
                                    }
                                });
            return;
        }
        if (n < 0) {
            broke(fmt::format("writing to the worker failed: {}", std::strerror(errno)));
            return;
        }
        out.sent += static_cast<std::size_t>(n);
        if (out.sent == out.bytes.size()) {
            outbox_.pop_front();
        }
    }
}

void Worker::read() {
    channel_.async_read_some(
        asio::buffer(buffer_),
        [self = shared_from_this()](const boost::system::error_code& e, std::size_t n) {
            if (self->state_ == State::Gone) {
                return;
            }
            self->inbox_.append(self->buffer_.data(), n);
            while (self->inbox_.size() >= 4 && self->state_ != State::Gone) {
                const auto* p = reinterpret_cast<const unsigned char*>(self->inbox_.data());
                const std::size_t length = (std::size_t{p[0]} << 24) | (std::size_t{p[1]} << 16) |
                                           (std::size_t{p[2]} << 8) | std::size_t{p[3]};
                if (length > kMaxFrame) {
                    self->broke(fmt::format("a frame of {} bytes, more than 16 MiB", length));
                    return;
                }
                if (self->inbox_.size() < 4 + length) {
                    break;
                }
                const std::string text = self->inbox_.substr(4, length);
                self->inbox_.erase(0, 4 + length);
                self->on_frame(text);
            }
            if (e) {
                // The worker closed its end: it died or is about to. Its exit, once reaped,
                // says how; one that lingers is stopped. Not at once: a worker that crashed
                // must be recorded with its own signal, not with runbookd's.
                self->channel_closed_ = true;
                if (self->lost_reason_.empty() && self->state_ != State::Retiring) {
                    self->stop_if_lingering();
                }
                return;
            }
            self->read();
        });
}

void Worker::on_frame(const std::string& text) {
    auto message = nlohmann::json::parse(text, nullptr, false);
    if (!message.is_object() || !message.contains("type") || !message["type"].is_string()) {
        broke("a frame that is not a JSON object with a type");
        return;
    }
    const std::string type = message["type"];
    if (type == "hello") {
        if (state_ != State::Starting || message.value("protocol", 0) != kProtocol) {
            broke(state_ != State::Starting ? "a second hello" : "an unknown protocol version");
            return;
        }
        timer_.cancel();
        said_hello_ = true;
        state_ = State::Idle;
        pool_.log_->info("python worker ready pid={} python={} runbook_module={}", pid_,
                         log::quote(message.value("python", "")),
                         log::quote(message.value("runbook_module", "")));
        pool_.on_ready(shared_from_this());
        return;
    }
    if (type != "log" && type != "request" && type != "result") {
        broke(fmt::format("an unknown message type \"{}\"", type));
        return;
    }
    if (state_ != State::Busy || !step_) {
        broke(fmt::format("a {} message while no step runs", type));
        return;
    }
    auto step = step_;
    if (type == "result") {
        step_.reset();
    }
    step->on_message(message);
}

void Worker::broke(std::string why) {
    pool_.log_->warn("python worker broke the protocol pid={} error={}", pid_, log::quote(why));
    if (lost_reason_.empty()) {
        metrics::runbookd_metrics().python_worker_restart(metrics::WorkerRestart::ProtocolError);
    }
    stop("python worker broke the protocol: " + why, exec::Millis(0));
}

void Worker::stop(std::string reason, exec::Millis grace) {
    if (lost_reason_.empty()) {
        lost_reason_ = std::move(reason);
    }
    if (handle_) {
        stop_sent_ = true;
        handle_->cancel(lost_reason_, grace);
    }
}

void Worker::stop_if_lingering() {
    timer_.expires_after(kLingerAfterClose);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e && self->state_ != State::Gone) {
            self->stop(fmt::format("python worker closed its channel and had not exited {} ms "
                                   "later",
                                   kLingerAfterClose.count()),
                       exec::Millis(1'000));
        }
    });
}

void Worker::on_exit(exec::ProcessResult result) {
    state_ = State::Gone;
    handle_.reset();
    timer_.cancel();
    boost::system::error_code ignored;
    channel_.close(ignored);
    close_pending_fds();
    outbox_.clear();
    if (auto step = std::move(step_)) {
        const bool signalled = result.ending == exec::ProcessResult::Ending::Signaled;
        step->on_worker_lost(WorkerEnd{lost_reason_, stop_sent_ && signalled, std::move(result)});
    }
}

Pool::Pool(asio::io_context& io, exec::ProcessRunner& runner, PoolOptions options)
    : io_(io),
      runner_(runner),
      options_(std::move(options)),
      log_(log::get("python")),
      restart_timer_(io) {}

Pool::~Pool() = default;

std::uint64_t Pool::acquire(Ready ready, Failed failed) {
    const std::uint64_t ticket = next_ticket_++;
    waiters_.push_back(Waiter{ticket, std::move(ready), std::move(failed)});
    warm_ = true;
    // Posted: the caller may still be setting up what `ready` needs.
    asio::post(io_, [this] {
        fill();
        hand_out();
        fail_waiters_if_hopeless();
    });
    return ticket;
}

bool Pool::has_live_worker() const {
    return std::any_of(workers_.begin(), workers_.end(), [](const auto& w) {
        return w->state() != Worker::State::Gone && w->state() != Worker::State::Retiring;
    });
}

void Pool::fail_waiters_if_hopeless() {
    if ((start_failures_ == 0 && !no_starts_) || waiters_.empty() || has_live_worker()) {
        return;
    }
    auto waiters = std::move(waiters_);
    waiters_.clear();
    const std::string why = no_starts_ ? std::string(
                                             "no python worker is started while runbookd shuts "
                                             "down")
                                       : "no python worker could start: " + start_error_;
    for (auto& waiter : waiters) {
        asio::post(io_, [failed = std::move(waiter.failed), why] { failed(why); });
    }
}

void Pool::withdraw(std::uint64_t ticket) {
    waiters_.erase(std::remove_if(waiters_.begin(), waiters_.end(),
                                  [ticket](const Waiter& w) { return w.ticket == ticket; }),
                   waiters_.end());
}

void Pool::recycle() {
    ++generation_;
    std::size_t retired = 0;
    for (const auto& worker : std::vector<std::shared_ptr<Worker>>(workers_)) {
        if (worker->state() == Worker::State::Idle) {
            retire(worker);
            ++retired;
        }
    }
    if (!workers_.empty()) {
        log_->info("python workers recycled after a reload retired_now={} workers={}", retired,
                   workers_.size());
    }
}

void Pool::warm_up() {
    warm_ = true;
    fill();
}

// Keeps `workers` workers once warm; after failed starts, the next start waits (backoff).
void Pool::fill() {
    if (!warm_ || shutting_down_ || no_starts_ || restart_pending_) {
        return;
    }
    const bool probing = std::any_of(workers_.begin(), workers_.end(), [](const auto& w) {
        return w->state() == Worker::State::Starting;
    });
    if (start_failures_ > 0 && probing) {
        return;
    }
    if (start_failures_ > 0) {
        auto delay = kFirstRestart * (1 << std::min(start_failures_ - 1, 5));
        delay = std::min(delay, kMaxRestart);
        restart_pending_ = true;
        restart_timer_.expires_after(delay);
        restart_timer_.async_wait([this](const boost::system::error_code& e) {
            restart_pending_ = false;
            if (!e && !no_starts_ && workers_.size() < options_.workers) {
                spawn();  // one at a time until a worker says hello again
            }
        });
        return;
    }
    while (workers_.size() < options_.workers) {
        spawn();
    }
}

void Pool::spawn() {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        start_error_ = fmt::format("cannot create a socket pair: {}", std::strerror(errno));
        log_->error("python worker not started error={}", log::quote(start_error_));
        metrics::runbookd_metrics().python_worker_restart(metrics::WorkerRestart::StartFailed);
        ++start_failures_;
        return;
    }
    auto worker = std::make_shared<Worker>(*this, pair[0]);
    worker->generation_ = generation_;
    exec::ProcessSpec spec;
    spec.argv = {options_.worker,
                 "--channel-fd",
                 "3",
                 "--runbooks",
                 options_.runbooks_dir,
                 "--memory-limit",
                 std::to_string(options_.memory_limit)};
    for (const auto& dir : options_.path) {
        spec.argv.push_back("--path");
        spec.argv.push_back(dir);
    }
    spec.env = options_.env;
    spec.cwd = options_.cwd;
    spec.grace = options_.grace;
    spec.nice = options_.nice;
    spec.limits.address_space_bytes = options_.memory_limit;
    spec.helper = true;
    spec.channel_fd = pair[1];
    spec.output_path.clear();
    spec.log_context = "python_worker=1 ";
    workers_.push_back(worker);
    metrics::runbookd_metrics().python_workers(workers_.size());
    auto handle = runner_.start(std::move(spec), [this, worker](exec::ProcessResult result) {
        // Posted by the runner already; starting a replacement from here is safe.
        on_gone(worker, result);
    });
    ::close(pair[1]);
    worker->spawned(std::move(handle));
}

void Pool::on_ready(const std::shared_ptr<Worker>& worker) {
    start_failures_ = 0;
    start_error_.clear();
    if (shutting_down_) {
        retire(worker);
        return;
    }
    if (worker->generation_ != generation_) {
        retire(worker);  // started before a reload; on_gone starts its replacement
        return;
    }
    fill();
    hand_out();
}

void Pool::hand_out() {
    for (const auto& worker : workers_) {
        if (waiters_.empty()) {
            return;
        }
        if (worker->state() != Worker::State::Idle) {
            continue;
        }
        auto waiter = std::move(waiters_.front());
        waiters_.pop_front();
        worker->state_ = Worker::State::Busy;
        waiter.ready(worker);
    }
}

void Pool::release(std::shared_ptr<Worker> worker, bool retire_it) {
    if (worker->state() == Worker::State::Gone || worker->state() == Worker::State::Retiring) {
        return;
    }
    worker->step_.reset();
    if (retire_it || shutting_down_ || worker->generation_ != generation_ ||
        worker->steps_run() >= options_.max_steps_per_worker) {
        if (!retire_it && !shutting_down_) {
            metrics::runbookd_metrics().python_worker_restart(metrics::WorkerRestart::Retired);
        }
        retire(worker);
        fill();
        return;
    }
    worker->state_ = Worker::State::Idle;
    hand_out();
}

void Pool::retire(const std::shared_ptr<Worker>& worker) {
    worker->state_ = Worker::State::Retiring;
    worker->send(nlohmann::json{{"type", "exit"}});
    worker->timer_.expires_after(kExitGrace);
    worker->timer_.async_wait([worker](const boost::system::error_code& e) {
        if (!e && worker->state() == Worker::State::Retiring) {
            worker->stop("python worker did not exit within 1 s of being told to", exec::Millis(0));
        }
    });
}

void Pool::on_gone(const std::shared_ptr<Worker>& worker, const exec::ProcessResult& result) {
    const bool started = worker->said_hello_;
    const bool retiring = worker->state() == Worker::State::Retiring;
    worker->on_exit(result);
    workers_.erase(std::remove(workers_.begin(), workers_.end(), worker), workers_.end());
    auto& m = metrics::runbookd_metrics();
    m.python_workers(workers_.size());
    if (!started && !shutting_down_) {
        m.python_worker_restart(metrics::WorkerRestart::StartFailed);
        ++start_failures_;
        start_error_ = describe_worker_end(result);
        if (!worker->lost_reason_.empty()) {
            start_error_ = worker->lost_reason_ + "; " + start_error_;
        }
        if (!result.stderr_excerpt.empty()) {
            start_error_ += "; its stderr: " + result.stderr_excerpt;
        }
        log_->error("python worker failed to start pid={} error={}", worker->pid(),
                    log::quote(start_error_));
        fail_waiters_if_hopeless();
    } else if (!retiring && !shutting_down_) {
        if (worker->lost_reason_.empty()) {
            m.python_worker_restart(metrics::WorkerRestart::Died);  // nobody here stopped it
        }
        log_->warn("python worker gone pid={} how={}", worker->pid(),
                   log::quote(describe_worker_end(result)));
    } else {
        log_->debug("python worker retired pid={}", worker->pid());
    }
    if (shutting_down_) {
        if (workers_.empty() && shut_down_) {
            auto done = std::move(shut_down_);
            shut_down_ = nullptr;
            done();
        }
        return;
    }
    fill();
}

void Pool::stop_starting() {
    no_starts_ = true;
    restart_timer_.cancel();
    fail_waiters_if_hopeless();
}

void Pool::shutdown(std::function<void()> done) {
    shutting_down_ = true;
    restart_timer_.cancel();
    waiters_.clear();
    if (workers_.empty()) {
        done();
        return;
    }
    shut_down_ = std::move(done);
    for (const auto& worker : std::vector<std::shared_ptr<Worker>>(workers_)) {
        if (worker->state() == Worker::State::Idle) {
            retire(worker);
        } else if (worker->state() != Worker::State::Retiring) {
            worker->stop("runbookd is shutting down", exec::Millis(kExitGrace));
        }
    }
}

}  // namespace runbookd::python
