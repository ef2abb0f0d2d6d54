#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include <runbookd/runbook.hpp>
#include <runbookd/store.hpp>

#include "auth/auth.hpp"
#include "http/message.hpp"
#include "intake/alertmanager_intake.hpp"
#include "run/scheduler.hpp"

namespace runbookd::api {

// What /livez and /readyz report and what the webhook checks before taking a delivery. The
// daemon writes the flags (main thread) and the heartbeat (run engine thread); the HTTP io
// threads only read them, so a probe never waits for anything.
struct Health {
    std::atomic<bool> store_open{false};
    std::atomic<bool> recovered{false};
    std::atomic<bool> draining{false};
    // steady_clock time of the run engine thread's last heartbeat, in milliseconds.
    std::atomic<std::int64_t> engine_heartbeat_ms{0};

    static std::int64_t now_ms() {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }
};

// The run engine stamps its heartbeat this often; /livez fails once it is kLivenessLimit old.
constexpr std::chrono::milliseconds kHeartbeatInterval{250};
constexpr std::chrono::milliseconds kLivenessLimit{5000};

// What a reload of the runbooks directory did (docs/runbooks.md, Reload).
struct ReloadOutcome {
    enum class Result { Reloaded, InvalidRunbooks, Failed };
    Result result = Result::Reloaded;
    std::size_t runbooks = 0;  // in force now
    std::vector<std::string> added, removed, changed;
    // InvalidRunbooks: one "file:line:column: message" each; Failed: the cause.
    std::vector<std::string> errors;
};

// Reloads the runbooks for `actor` ("http:ADDR", "signal:SIGHUP"), one reload at a time, and
// calls `done` (on another thread) with what it did.
using Reloader = std::function<void(std::string actor, std::function<void(ReloadOutcome)> done)>;

struct ApiContext {
    Store* store = nullptr;
    const CurrentCatalog* catalog = nullptr;
    intake::AlertmanagerIntake* intake = nullptr;
    run::Scheduler* scheduler = nullptr;
    const Health* health = nullptr;
    Reloader reload;
    std::string output_dir;  // exec.output_dir, where follow reads a step's output as it grows
    // Checks credentials and scopes (docs/auth.md); add_routes() makes it the router's guard.
    auth::Authenticator* auth = nullptr;
};

// Registers the HTTP API (docs/http-api.md) on `router`, each route with the scope it needs,
// and the context's authenticator as the router's guard. `context` must outlive the router.
void add_routes(http::Router& router, const ApiContext& context);

// True for "application/json", with or without parameters such as "; charset=utf-8".
bool is_json_media_type(std::string_view content_type);

// Shared by the API's handlers (routes.cpp, manual_run.cpp); the connection's io thread.

// 503 draining with Retry-After: runbookd is shutting down; `message` says what was not done.
http::Response draining_response(std::string_view message);
// Who is asking (docs/auth.md, Actor): the authenticated principal ("token:NAME"); without
// tokens, `given` (the body's actor) when not empty, else "http:<remote address>".
std::string request_actor(const http::Request& req, std::string given);
// With credentials, a body naming an actor is refused: answers 400 and returns true.
bool refuse_claimed_actor(const http::Request& req, std::string_view given,
                          const http::Responder& respond);
// A run as GET /api/v1/runs/{id} shows it.
nlohmann::json run_detail_json(const RunDetail& detail);
// POST /api/v1/runbooks/{name}/runs (docs/manual-runs.md).
void start_manual_run(const ApiContext& ctx, http::Request&& req, http::Responder respond);
// POST /api/v1/plan (docs/manual-runs.md).
void plan_notification(const ApiContext& ctx, http::Request&& req, http::Responder respond);

}  // namespace runbookd::api
