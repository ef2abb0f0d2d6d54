#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <runbookd/result.hpp>
#include <runbookd/runbook.hpp>

#include "api/routes.hpp"
#include "daemon/config.hpp"

namespace runbookd::daemon {

// Loads every runbook of `dir`; on any problem returns an Error listing all of them, one
// "file:line:column: message" per line.
// `secret_names`: the configured secrets runbooks may name (null: any name).
Result<std::shared_ptr<const RunbookCatalog>> load_catalog(
    const std::string& dir, const std::set<std::string>* secret_names = nullptr);

// The whole of runbookd wired together: store, scheduler and executors on their own thread,
// and the HTTP server. Start-up order and shutdown order are written out in daemon.cpp and
// docs/architecture.md.
class Daemon {
  public:
    explicit Daemon(Config config);
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // Loads the runbooks, opens and migrates the database, recovers unfinished runs and starts
    // serving. A failure leaves nothing running.
    Status start();

    // The bound HTTP port (useful with port 0).
    std::uint16_t port() const;

    // Drains, then stops: readiness goes false and the webhook refuses deliveries at once,
    // active runs get up to the shutdown grace and are then cancelled, then the HTTP server,
    // the run engine and the store stop. Safe to call more than once.
    void shutdown();

    // Reloads the runbooks directory for `actor` (docs/runbooks.md, Reload): validated as at
    // start-up; on any error the runbooks in force stay. Reloads run one after another on a
    // thread of their own, which calls `done` (may be empty). Any thread, after start().
    void reload(std::string actor, std::function<void(api::ReloadOutcome)> done);

    // During shutdown: stop waiting for active runs and cancel them now. Any thread.
    void hurry();

    // Runs `work` on the run engine thread (for tests: a stuck engine fails /livez). Any
    // thread, after start().
    void run_on_engine_thread(std::function<void()> work);

  private:
    api::ReloadOutcome reload_now(const std::string& actor);
    // Waits for the active runs (shutdown grace, then cancel); HTTP keeps serving meanwhile.
    void drain_runs();
    // Tells the Python workers to exit and waits (bounded) until they are reaped.
    void stop_python_workers();

    struct Parts;
    Config config_;
    std::unique_ptr<Parts> parts_;
};

}  // namespace runbookd::daemon
