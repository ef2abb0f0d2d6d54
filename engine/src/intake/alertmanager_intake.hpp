#pragma once

#include <functional>
#include <memory>
#include <string>

#include <runbookd/runbook.hpp>
#include <runbookd/store.hpp>

#include "run/scheduler.hpp"

namespace runbookd::intake {

struct Delivery {
    std::string body;
    std::string remote_addr;
    std::string user_agent;
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
                       std::function<Timestamp()> clock = {});

    // `reply` runs exactly once, possibly on another thread.
    void handle(Delivery delivery, std::function<void(IntakeReply)> reply);

  private:
    void cancel_resolved(const DeliveryRecord& record, const DeliveryReceipt& receipt);

    Store& store_;
    const CurrentCatalog& catalog_;
    run::Scheduler& scheduler_;
    std::function<Timestamp()> clock_;
    std::shared_ptr<spdlog::logger> log_;
};

}  // namespace runbookd::intake
