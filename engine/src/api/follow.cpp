#include "api/follow.hpp"

#include <chrono>
#include <map>

#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "common/json_text.hpp"
#include "exec/output.hpp"

namespace runbookd::api {
namespace {

using Json = nlohmann::json;

// Output sent per event at most, and per turn of the stream at most, so that one busy step
// neither builds a huge event nor holds the connection's thread.
constexpr std::size_t kOutputEventBytes = 16 * 1024;
constexpr std::size_t kOutputTurnBytes = 256 * 1024;
// A comment line this often while nothing happens, so that proxies keep the stream open and a
// client that left is noticed.
constexpr std::chrono::seconds kKeepAlive{15};

// What of one attempt was sent already.
struct AttemptProgress {
    bool started_sent = false;
    bool ended_sent = false;
    off_t offset = 0;      // bytes of the output file sent (or held back) so far
    bool no_file = false;  // the output file did not exist when the attempt had ended
};

// Bytes at the end of `data` that start a UTF-8 sequence not yet complete: held back until
// the rest arrives, so that a character split between two reads is not shown as U+FFFD.
std::size_t incomplete_utf8_tail(std::string_view data) {
    const std::size_t n = data.size();
    for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
        const auto c = static_cast<unsigned char>(data[n - back]);
        if ((c & 0xC0) != 0x80) {
            const std::size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
            return need > back ? back : 0;
        }
    }
    return 0;
}

void append_event(std::string& out, std::string_view name, const Json& data) {
    out += "event: ";
    out += name;
    out += "\ndata: ";
    out += data.dump(-1, ' ', false, Json::error_handler_t::replace);
    out += "\n\n";
}

class RunFollower : public http::BodyStream {
  public:
    RunFollower(Store& store, RunId run, std::string output_dir)
        : store_(store), run_(run), output_dir_(std::move(output_dir)) {}

    Piece next() override {
        const auto now = std::chrono::steady_clock::now();
        auto detail = store_.get_run(run_);
        if (!detail) {
            std::string out;
            append_event(out, "error",
                         {{"code", error_code_name(detail.error().code)},
                          {"message", detail.error().message}});
            return {std::move(out), true};
        }
        std::string out;
        const RunSummary& run = detail->run;
        // A run's end is told by the `end` event, after everything of its attempts.
        if (!is_terminal(run.state) && (run.state != last_state_ || !state_sent_)) {
            append_event(out, "run",
                         {{"id", run.id},
                          {"runbook", run.runbook},
                          {"state", run_state_name(run.state)},
                          {"reason", run.reason}});
            last_state_ = run.state;
            state_sent_ = true;
        }
        std::size_t budget = kOutputTurnBytes;
        bool all_sent = true;
        for (const auto& a : detail->attempts) {
            AttemptProgress& p = attempts_[a.id];
            if (!p.started_sent) {
                append_event(out, "attempt",
                             {{"id", a.id},
                              {"step", a.start.step},
                              {"attempt", a.start.attempt},
                              {"kind", a.start.kind},
                              {"argv", a.start.argv},
                              {"state", "running"},
                              {"started_at", a.start.started_at.to_rfc3339_millis()}});
                p.started_sent = true;
            }
            if (p.ended_sent) {
                continue;
            }
            const bool drained = send_output(out, a, p, budget);
            if (!a.end || !drained) {
                all_sent = all_sent && a.end.has_value() && drained;
                continue;
            }
            append_event(out, "attempt", ended_json(a, p));
            p.ended_sent = true;
        }
        const bool done = is_terminal(run.state) && all_sent;
        if (done) {
            append_event(out, "end",
                         {{"id", run.id},
                          {"runbook", run.runbook},
                          {"state", run_state_name(run.state)},
                          {"reason", run.reason}});
        }
        if (out.empty() && now - last_sent_ >= kKeepAlive) {
            out = ": keep-alive\n\n";
        }
        if (!out.empty()) {
            last_sent_ = now;
        }
        return {std::move(out), done};
    }

  private:
    std::string output_path(const AttemptRecord& a) const {
        return exec::output_file_path(output_dir_, run_, a.start.step_index, a.start.attempt);
    }

    // Sends what the attempt's output file gained, within `budget`. True when everything
    // there is now was sent (or there is no file).
    bool send_output(std::string& out, const AttemptRecord& a, AttemptProgress& p,
                     std::size_t& budget) {
        if (output_dir_.empty() || p.no_file) {
            return true;
        }
        const std::string path =
            a.end && !a.end->output_path.empty() ? a.end->output_path : output_path(a);
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            // Not created yet (the step has produced nothing), or never (an attempt that
            // started no process, or a file that could not be written).
            if (a.end) {
                p.no_file = true;
            }
            return true;
        }
        bool drained = false;
        std::string chunk;
        while (budget > 0) {
            chunk.resize(std::min(kOutputEventBytes, budget));
            const ssize_t n = ::pread(fd, chunk.data(), chunk.size(), p.offset);
            if (n <= 0) {
                drained = true;
                break;
            }
            chunk.resize(static_cast<std::size_t>(n));
            // At the end of a finished attempt's file nothing more will come: send it all.
            const bool last = a.end && static_cast<std::size_t>(n) < kOutputEventBytes;
            const std::size_t hold = last ? 0 : incomplete_utf8_tail(chunk);
            chunk.resize(chunk.size() - hold);
            if (chunk.empty()) {
                drained = true;
                break;
            }
            p.offset += static_cast<off_t>(chunk.size());
            budget -= chunk.size();
            std::string text;
            json_text::append_string(text, chunk);
            out += "event: output\ndata: {\"attempt\":" + std::to_string(a.id) + ",\"step\":";
            json_text::append_string(out, a.start.step);
            out += ",\"text\":" + text + "}\n\n";
        }
        ::close(fd);
        return drained;
    }

    Json ended_json(const AttemptRecord& a, const AttemptProgress& p) const {
        const AttemptEnd& e = *a.end;
        Json out = {{"id", a.id},
                    {"step", a.start.step},
                    {"attempt", a.start.attempt},
                    {"state", a.state},
                    {"exit_code", e.exit_code ? Json(*e.exit_code) : Json(nullptr)},
                    {"signal", e.signal ? Json(*e.signal) : Json(nullptr)},
                    {"error", e.error},
                    {"duration_ms", e.duration_ms},
                    {"finished_at", e.finished_at.to_rfc3339_millis()}};
        // Without an output file the excerpts are all a follower can see.
        if (output_dir_.empty() || p.no_file) {
            out["stdout"] = e.stdout_excerpt;
            out["stderr"] = e.stderr_excerpt;
        }
        return out;
    }

    Store& store_;
    RunId run_;
    std::string output_dir_;
    RunState last_state_ = RunState::Queued;
    bool state_sent_ = false;
    std::map<AttemptId, AttemptProgress> attempts_;
    std::chrono::steady_clock::time_point last_sent_ = std::chrono::steady_clock::now();
};

}  // namespace

std::shared_ptr<http::BodyStream> follow_run(Store& store, RunId run, std::string output_dir) {
    return std::make_shared<RunFollower>(store, run, std::move(output_dir));
}

}  // namespace runbookd::api
