#include "connection.hpp"

#include <array>
#include <cerrno>
#include <cstring>

#include <sys/socket.h>
#include <unistd.h>

namespace runbookd::worker {
namespace {

constexpr std::size_t kMaxFdsPerMessage = 8;

std::string big_endian_length(std::size_t size) {
    std::string header(4, '\0');
    for (std::size_t i = 0; i < 4; ++i) {
        header[3 - i] = static_cast<char>((size >> (8 * i)) & 0xffU);
    }
    return header;
}

void collect_fds(msghdr& message, std::vector<int>& fds) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int fd = -1;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            fds.push_back(fd);
        }
    }
}

}  // namespace

std::optional<std::string> Connection::send(const nlohmann::json& body) {
    std::string text = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (text.size() > kMaxFrameBytes) {
        return "message of " + std::to_string(text.size()) + " bytes is over the 16 MiB limit";
    }
    std::string frame = big_endian_length(text.size()) + text;
    std::lock_guard lock(send_mutex_);
    std::size_t sent = 0;
    while (sent < frame.size()) {
        ssize_t n = ::send(fd_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return std::string("sending to runbookd failed: ") + std::strerror(errno);
        }
        sent += static_cast<std::size_t>(n);
    }
    return std::nullopt;
}

std::int64_t Connection::next_request_id() {
    std::lock_guard lock(mutex_);
    return ++last_request_id_;
}

std::variant<Frame, ReadFailure> Connection::wait_command() {
    return wait<Frame>([this]() -> std::optional<Frame> {
        if (commands_.empty()) {
            return std::nullopt;
        }
        Frame frame = std::move(commands_.front());
        commands_.pop_front();
        return frame;
    });
}

std::variant<nlohmann::json, ReadFailure> Connection::wait_reply(std::int64_t id) {
    return wait<nlohmann::json>([this, id]() -> std::optional<nlohmann::json> {
        auto found = replies_.find(id);
        if (found == replies_.end()) {
            return std::nullopt;
        }
        nlohmann::json reply = std::move(found->second);
        replies_.erase(found);
        return reply;
    });
}

template <typename T, typename Take>
std::variant<T, ReadFailure> Connection::wait(Take take) {
    std::unique_lock lock(mutex_);
    while (true) {
        if (std::optional<T> item = take()) {
            return std::move(*item);
        }
        if (failure_) {
            return *failure_;
        }
        if (reading_) {
            changed_.wait(lock);
            continue;
        }
        reading_ = true;
        lock.unlock();
        std::variant<Frame, ReadFailure> read = read_frame();
        lock.lock();
        reading_ = false;
        route(std::move(read));
        changed_.notify_all();
    }
}

void Connection::route(std::variant<Frame, ReadFailure> read) {
    if (auto* failure = std::get_if<ReadFailure>(&read)) {
        failure_ = std::move(*failure);
        return;
    }
    Frame& frame = std::get<Frame>(read);
    if (frame.body["type"] != "reply") {
        commands_.push_back(std::move(frame));
        return;
    }
    const nlohmann::json& id = frame.body["id"];
    if (!id.is_number_integer()) {
        failure_ = ReadFailure{false, "reply without an integer id"};
        return;
    }
    replies_[id.get<std::int64_t>()] = std::move(frame.body);
}

std::variant<Frame, ReadFailure> Connection::read_frame() {
    Frame frame;
    std::array<char, 4> header{};
    if (auto failure = read_exact(header.data(), header.size(), frame.fds, false)) {
        return *failure;
    }
    std::size_t size = 0;
    for (char byte : header) {
        size = (size << 8) | static_cast<unsigned char>(byte);
    }
    if (size > kMaxFrameBytes) {
        return ReadFailure{false,
                           "frame of " + std::to_string(size) + " bytes is over the 16 MiB limit"};
    }
    std::string text(size, '\0');
    if (auto failure = read_exact(text.data(), size, frame.fds, true)) {
        return *failure;
    }
    frame.body = nlohmann::json::parse(text, nullptr, false);
    if (frame.body.is_discarded() || !frame.body.is_object() || !frame.body["type"].is_string()) {
        return ReadFailure{false, "malformed frame: not a JSON object with a string type"};
    }
    return frame;
}

std::optional<ReadFailure> Connection::read_exact(char* data, std::size_t size,
                                                  std::vector<int>& fds, bool frame_started) {
    std::size_t done = 0;
    while (done < size) {
        iovec io{data + done, size - done};
        alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)> control{};
        msghdr message{};
        message.msg_iov = &io;
        message.msg_iovlen = 1;
        message.msg_control = control.data();
        message.msg_controllen = control.size();
        ssize_t n = ::recvmsg(fd_, &message, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return ReadFailure{
                false, std::string("reading from runbookd failed: ") + std::strerror(errno)};
        }
        collect_fds(message, fds);
        if (n == 0 && (done > 0 || frame_started)) {
            return ReadFailure{false, "runbookd closed the socket inside a frame"};
        }
        if (n == 0) {
            return ReadFailure{true, "runbookd closed the socket"};
        }
        done += static_cast<std::size_t>(n);
    }
    return std::nullopt;
}

}  // namespace runbookd::worker
