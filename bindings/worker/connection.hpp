#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace runbookd::worker {

// docs/python-steps.md, "Protocol": a larger frame is a protocol error on either side.
inline constexpr std::size_t kMaxFrameBytes = 16 * 1024 * 1024;

// One message of the protocol and the descriptors that came with it (SCM_RIGHTS).
struct Frame {
    nlohmann::json body;
    std::vector<int> fds;
};

// Why reading the socket gave no frame: runbookd closed its end (a normal end for a worker)
// or broke the protocol.
struct ReadFailure {
    bool eof = false;
    std::string message;
};

// The worker's end of runbookd's socket. Owned by the worker's main function for the whole
// process. send() may be called from any thread. The two waits must be called without the GIL:
// one waiting thread at a time reads the socket and hands each frame to the thread that waits
// for it (a reply to the thread that sent the request with that id, anything else to
// wait_command()), so a step's threads may each wait for their own reply.
class Connection {
  public:
    explicit Connection(int fd) : fd_(fd) {}

    // Returns the error text when the frame could not be written.
    std::optional<std::string> send(const nlohmann::json& body);

    std::int64_t next_request_id();

    std::variant<Frame, ReadFailure> wait_command();

    std::variant<nlohmann::json, ReadFailure> wait_reply(std::int64_t id);

  private:
    template <typename T, typename Take>
    std::variant<T, ReadFailure> wait(Take take);

    void route(std::variant<Frame, ReadFailure> read);
    std::variant<Frame, ReadFailure> read_frame();
    std::optional<ReadFailure> read_exact(char* data, std::size_t size, std::vector<int>& fds,
                                          bool frame_started);

    int fd_;
    std::mutex send_mutex_;
    std::mutex mutex_;
    std::condition_variable changed_;
    bool reading_ = false;
    std::optional<ReadFailure> failure_;
    std::deque<Frame> commands_;
    std::map<std::int64_t, nlohmann::json> replies_;
    std::int64_t last_request_id_ = 0;
};

}  // namespace runbookd::worker
