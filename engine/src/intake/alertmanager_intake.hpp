#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <runbookd/runbook.hpp>
#include <runbookd/store.hpp>

#include "run/scheduler.hpp"

namespace runbookd::intake {

struct Delivery {
    std::string body;
    std::string remote_addr;
    std::string user_agent;
    std::string traceparent;  // the request's header as received; may be empty or invalid
};

// When the intake stops taking deliveries so that Alertmanager retries them later
// (docs/intake.md, Overload). Past either limit it answers 503 and /readyz says not ready,
// until both counts are back to half their limit.
struct IntakeLimits {
    // Deliveries parsed and waiting for their commit: a slow or stalled disk shows here.
    std::size_t max_pending_deliveries = 512;
    // Runs recorded as queued that have not started executing: runs arrive faster than they end.
    std::size_t max_queued_runs = 10'000;
};

// What the webhook answers: 200 with the summary once everything is committed, 400 with the
// offending field, or 503 when the store could not record the delivery.
struct IntakeReply {
    unsigned status = 200;
    std::string body;  // JSON
    // Set instead of `body` when the body is better built on the answering thread.
    std::function<std::string()> render_body;
};

// Decides, for each alert of `record`, which runbooks of `catalog` it would start (a run request
// each, with its dedup key) and why the others do not act (no match, status ignored). Pure;
// shared by the intake and POST /api/v1/plan.
void match_alerts(const RunbookCatalog& catalog, DeliveryRecord& record);

// Receives Alertmanager notifications: parses them, matches each alert against the runbooks,
// records the delivery, its alerts and the runs it starts in one commit, and only then queues
// the runs and answers. Each delivery matches against the catalog in force when it arrives
// (`catalog`, which a reload replaces). Stateless otherwise; safe to call from any thread.
class AlertmanagerIntake {
  public:
    // `clock` stamps each delivery (empty: the system clock).
    // `catalog` must outlive the intake.
    AlertmanagerIntake(Store& store, const CurrentCatalog& catalog, run::Scheduler& scheduler,
                       std::function<Timestamp()> clock = {}, IntakeLimits limits = {});

    // `reply` runs exactly once, possibly on another thread. The caller asks overloaded()
    // first: handle() takes every delivery it is given.
    void handle(Delivery delivery, std::function<void(IntakeReply)> reply);

    // Why deliveries should be refused now, in words, or nullopt when they are welcome. Any
    // thread; /readyz asks too, so the state also clears while no delivery arrives.
    std::optional<std::string> overloaded();

  private:
    void cancel_resolved(const DeliveryRecord& record, const DeliveryReceipt& receipt);

    Store& store_;
    const CurrentCatalog& catalog_;
    run::Scheduler& scheduler_;
    std::function<Timestamp()> clock_;
    IntakeLimits limits_;
    std::atomic<std::size_t> pending_{0};
    std::atomic<bool> overloaded_{false};
    std::shared_ptr<spdlog::logger> log_;
};

}  // namespace runbookd::intake
