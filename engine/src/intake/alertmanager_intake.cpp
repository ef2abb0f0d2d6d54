#include "intake/alertmanager_intake.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/hash.hpp"
#include "common/json_text.hpp"
#include "common/log.hpp"
#include "common/trace.hpp"
#include "metrics/runbookd_metrics.hpp"

namespace runbookd::intake {
namespace {

using Json = nlohmann::json;

std::string dump(const Json& j) {
    return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

std::string error_body(std::string_view code, std::string_view message, std::string_view field) {
    Json error = {{"code", code}, {"message", message}};
    if (!field.empty()) {
        error["field"] = field;
    }
    return dump(Json{{"error", error}});
}

// The 200 answer, written directly (this runs for every delivery).
std::string summary(const DeliveryRecord& record, const DeliveryReceipt& receipt) {
    std::size_t started = 0;
    for (const RunId id : receipt.run_ids) {
        started += id != 0 ? 1 : 0;
    }
    std::string out = fmt::format(R"({{"delivery_id":{},"alerts_received":{},"runs_started":{},)"
                                  R"("runs":[)",
                                  receipt.delivery_id, record.alerts.size(), started);
    bool first = true;
    for (std::size_t i = 0; i < record.runs.size(); ++i) {
        if (receipt.run_ids[i] == 0) {
            continue;
        }
        const auto& alert = record.alerts[record.runs[i].alert_index].alert;
        out += fmt::format(R"({}{{"run_id":{},"runbook":)", first ? "" : ",", receipt.run_ids[i]);
        first = false;
        json_text::append_string(out, record.runs[i].runbook);
        out += R"(,"fingerprint":)";
        json_text::append_string(out, alert.fingerprint);
        out += '}';
    }
    // Alerts that started nothing, and runs not started for an alert that started others.
    out += R"(],"not_acted_on":[)";
    first = true;
    const auto entry = [&](const Alert& alert, std::string_view reason, std::string_view detail,
                           const std::string* runbook) {
        out += first ? R"({"fingerprint":)" : R"(,{"fingerprint":)";
        first = false;
        json_text::append_string(out, alert.fingerprint);
        out += fmt::format(R"(,"status":"{}","reason":"{}",)", alert_status_name(alert.status),
                           reason);
        if (runbook != nullptr) {
            out += R"("runbook":)";
            json_text::append_string(out, *runbook);
            out += ',';
        }
        out += R"("detail":)";
        json_text::append_string(out, detail);
        out += '}';
    };
    for (std::size_t a = 0; a < record.alerts.size(); ++a) {
        const AlertOutcome outcome = receipt.alert_outcomes[a];
        if (outcome == AlertOutcome::RunStarted) {
            continue;
        }
        entry(record.alerts[a].alert, alert_outcome_name(outcome), receipt.alert_details[a],
              nullptr);
    }
    for (std::size_t i = 0; i < record.runs.size(); ++i) {
        const std::size_t a = record.runs[i].alert_index;
        const auto& skip = receipt.skipped[i];
        if (!skip.skipped() || receipt.alert_outcomes[a] != AlertOutcome::RunStarted) {
            continue;
        }
        entry(record.alerts[a].alert, alert_outcome_name(skip.outcome), skip.reason,
              &record.runs[i].runbook);
    }
    out += R"(],"warnings":[)";
    for (std::size_t i = 0; i < record.warnings.size(); ++i) {
        if (i > 0) {
            out += ',';
        }
        json_text::append_string(out, record.warnings[i]);
    }
    out += "]}\n";
    return out;
}

}  // namespace

void match_alerts(const RunbookCatalog& catalog, DeliveryRecord& record) {
    for (std::size_t i = 0; i < record.alerts.size(); ++i) {
        auto& entry = record.alerts[i];
        std::vector<std::string> ignoring;
        for (const auto& runbook : catalog.all()) {
            if (!runbook->matches_labels(entry.alert.labels)) {
                continue;
            }
            if (entry.alert.status == AlertStatus::Resolved) {
                record.resolutions.push_back({i, runbook->name});
            }
            if (!runbook->acts_on(entry.alert.status)) {
                ignoring.push_back(runbook->name);
                continue;
            }
            DeliveryRecord::RunRequest run{i,
                                           runbook->name,
                                           runbook->content_hash,
                                           entry.alert.fingerprint,
                                           runbook->cooldown,
                                           runbook->max_runs,
                                           runbook->once_until_resolved};
            if (runbook->dedup) {
                const TemplateScope scope{&entry.alert, 0, runbook->name};
                auto key = runbook->dedup->render(scope);
                if (key && !key->empty()) {
                    run.dedup_key = std::move(*key);
                } else if (key) {
                    record.warnings.push_back(fmt::format(
                        "runbook {}: dedup key rendered empty for alert {}; cooldown and "
                        "max_runs count this alert on its own",
                        runbook->name, entry.alert.fingerprint));
                } else {
                    // Act rather than suppress on a key the runbook cannot render for this
                    // alert: cooldown and budget then count per alert.
                    record.warnings.push_back(fmt::format(
                        "runbook {}: dedup key not rendered for alert {} ({}); cooldown and "
                        "max_runs count this alert on its own",
                        runbook->name, entry.alert.fingerprint, key.error().message));
                }
            }
            record.runs.push_back(std::move(run));
            entry.outcome = AlertOutcome::RunStarted;
        }
        if (entry.outcome == AlertOutcome::RunStarted) {
            continue;
        }
        if (!ignoring.empty()) {
            entry.outcome = AlertOutcome::StatusIgnored;
            entry.outcome_detail =
                fmt::format("matching runbooks do not act on {} alerts: {}",
                            alert_status_name(entry.alert.status), fmt::join(ignoring, ", "));
        } else {
            entry.outcome = AlertOutcome::NoMatchingRunbook;
            entry.outcome_detail = "no runbook matches the alert's labels";
        }
    }
}

AlertmanagerIntake::AlertmanagerIntake(Store& store, const CurrentCatalog& catalog,
                                       run::Scheduler& scheduler, std::function<Timestamp()> clock,
                                       IntakeLimits limits)
    : store_(store),
      catalog_(catalog),
      scheduler_(scheduler),
      clock_(clock ? std::move(clock) : [] { return Timestamp::now(); }),
      limits_(limits),
      log_(log::get("alert")) {}

std::optional<std::string> AlertmanagerIntake::overloaded() {
    const std::size_t pending = pending_.load();
    const std::size_t queued = scheduler_.waiting_runs();
    const bool over =
        pending >= limits_.max_pending_deliveries || queued >= limits_.max_queued_runs;
    const bool drained =
        pending <= limits_.max_pending_deliveries / 2 && queued <= limits_.max_queued_runs / 2;
    bool was = overloaded_.load();
    if (!was && over && overloaded_.compare_exchange_strong(was, true)) {
        log_->warn(
            "intake overloaded, refusing deliveries with 503 pending_deliveries={} "
            "queued_runs={} max_pending_deliveries={} max_queued_runs={}",
            pending, queued, limits_.max_pending_deliveries, limits_.max_queued_runs);
    } else if (was && drained && overloaded_.compare_exchange_strong(was, false)) {
        log_->info("intake drained, taking deliveries again pending_deliveries={} queued_runs={}",
                   pending, queued);
    }
    if (!overloaded_.load()) {
        return std::nullopt;
    }
    return fmt::format(
        "runbookd is overloaded: {} deliveries wait for their commit (limit {}) and {} runs "
        "wait to start (limit {}); it takes deliveries again once both are at half their limit",
        pending, limits_.max_pending_deliveries, queued, limits_.max_queued_runs);
}

void AlertmanagerIntake::handle(Delivery delivery, std::function<void(IntakeReply)> reply) {
    auto parsed = parse_notification(delivery.body);
    if (!parsed) {
        const Error& e = parsed.error();
        log_->warn("notification rejected remote={} field={} error={}",
                   log::quote(delivery.remote_addr), log::quote(e.where), log::quote(e.message));
        reply(IntakeReply{400, error_body("invalid_payload", e.describe(), e.where), {}});
        return;
    }
    Notification& n = *parsed;

    DeliveryRecord record;
    record.received_at = clock_();
    record.source = "alertmanager";
    record.remote_addr = std::move(delivery.remote_addr);
    record.user_agent = std::move(delivery.user_agent);
    record.body_bytes = delivery.body.size();
    record.body_sha256 = sha256_hex(delivery.body);
    record.receiver = std::move(n.receiver);
    record.group_key = std::move(n.group_key);
    record.status = alert_status_name(n.status);
    record.external_url = std::move(n.external_url);
    record.truncated_alerts = n.truncated_alerts;
    if (n.truncated_alerts > 0) {
        record.warnings.push_back(fmt::format(
            "Alertmanager left out {} alerts of this group (max_alerts of the webhook receiver); "
            "they were not seen and start no runs",
            n.truncated_alerts));
        log_->warn("notification truncated receiver={} group_key={} truncated_alerts={}",
                   log::quote(record.receiver), log::quote(record.group_key), n.truncated_alerts);
    }
    record.alerts.reserve(n.alerts.size());
    for (auto& alert : n.alerts) {
        record.alerts.push_back({std::move(alert), AlertOutcome::NoMatchingRunbook, {}});
    }
    match_alerts(*catalog_.get(), record);
    // One trace for the delivery (the caller's, else a new one); a span of its own for each run.
    const auto incoming = trace::parse_traceparent(delivery.traceparent);
    if (incoming) {
        record.traceparent = incoming->header();
    } else if (!delivery.traceparent.empty()) {
        log_->debug("traceparent ignored, not valid W3C trace context value={}",
                    log::quote(delivery.traceparent));
    }
    const trace::TraceParent delivery_trace = incoming ? *incoming : trace::child_of(std::nullopt);
    for (auto& run : record.runs) {
        run.traceparent = trace::child_of(delivery_trace).header();
    }

    auto shared = std::make_shared<const DeliveryRecord>(std::move(record));
    pending_.fetch_add(1);
    store_.record_delivery(
        shared, [this, shared, reply = std::move(reply)](Result<DeliveryReceipt> receipt) {
            // On the store's thread, which must stay free for the next commit: queue the runs and
            // leave building the answer to the connection's thread.
            pending_.fetch_sub(1);
            if (!receipt) {
                log_->error("recording delivery failed, answering 503 error={}",
                            log::quote(receipt.error().message));
                reply(IntakeReply{503,
                                  error_body("store_unavailable",
                                             "the delivery could not be recorded; nothing from it "
                                             "will run: " +
                                                 receipt.error().message,
                                             ""),
                                  {}});
                return;
            }
            auto& m = metrics::runbookd_metrics();
            for (std::size_t i = 0; i < shared->alerts.size(); ++i) {
                m.alert(shared->alerts[i].alert.status, receipt->alert_outcomes[i]);
            }
            auto started = receipt->started_runs();
            log_->info("delivery recorded delivery={} receiver={} alerts={} runs={} duplicates={}",
                       receipt->delivery_id, log::quote(shared->receiver), shared->alerts.size(),
                       started.size(), receipt->run_ids.size() - started.size());
            if (!started.empty()) {
                scheduler_.enqueue(std::move(started));
            }
            cancel_resolved(*shared, *receipt);
            reply(IntakeReply{200, {}, [shared, done = std::move(*receipt)] {
                                  return summary(*shared, done);
                              }});
        });
}

// `on_resolve: cancel`: a run still queued or running when its alert resolves is stopped
// gracefully. The resolution is committed first, so a crash before the cancel leaves a run
// that recovery ends (it was in flight) rather than one that runs on unnoticed.
void AlertmanagerIntake::cancel_resolved(const DeliveryRecord& record,
                                         const DeliveryReceipt& receipt) {
    for (const auto& [run, index] : receipt.resolved_runs) {
        const auto& resolution = record.resolutions[index];
        const auto runbook = catalog_.get()->find(resolution.runbook);
        if (!runbook || !runbook->on_resolve_cancel) {
            continue;
        }
        const Alert& alert = record.alerts[resolution.alert_index].alert;
        scheduler_.cancel(
            run, "alertmanager",
            fmt::format("the alert resolved (delivery {}, fingerprint {}); runbook {} has "
                        "on_resolve: cancel",
                        receipt.delivery_id, alert.fingerprint, resolution.runbook),
            [log = log_, run = run](Result<run::CancelOutcome> r) {
                if (r) {
                    log->info("run cancelled because its alert resolved run={}", run);
                } else if (r.error().code != ErrorCode::FailedPrecondition) {
                    log->warn("cancelling run of a resolved alert failed run={} error={}", run,
                              log::quote(r.error().message));
                }
            });
    }
}

}  // namespace runbookd::intake
