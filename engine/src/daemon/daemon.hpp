#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include <runbookd/result.hpp>
#include <runbookd/runbook.hpp>

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

    // Stops in order: HTTP intake, then runs (waiting up to the shutdown grace), then the
    // store. Safe to call more than once.
    void shutdown();

    // During shutdown: stop waiting for active runs and cancel them now. Any thread.
    void hurry();

  private:
    struct Parts;
    Config config_;
    std::unique_ptr<Parts> parts_;
};

}  // namespace runbookd::daemon
