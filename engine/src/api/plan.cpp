#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "api/routes.hpp"
#include "common/json_text.hpp"

namespace runbookd::api {
namespace {

using Json = nlohmann::json;

http::Response invalid(std::string_view message, std::string_view field) {
    return http::json_error(400, "invalid_argument", message, field);
}

// `{"labels": {...}, "status": "firing"}`: one alert, a new episode starting now.
Result<Alert> alert_from_labels(const Json& body) {
    for (const auto& [key, value] : body.items()) {
        if (key != "labels" && key != "status") {
            return make_error(ErrorCode::InvalidArgument,
                              fmt::format("unknown field \"{}\" (expected alerts, as Alertmanager "
                                          "sends them, or labels and status)",
                                          key),
                              key);
        }
    }
    const Json labels = body.value("labels", Json());
    if (!labels.is_object()) {
        return make_error(ErrorCode::InvalidArgument,
                          "labels must be an object of strings, such as {\"alertname\": \"X\"}",
                          "labels");
    }
    Alert alert;
    for (const auto& [name, value] : labels.items()) {
        if (!value.is_string() || !json_text::valid_utf8(name) ||
            !json_text::valid_utf8(value.get_ref<const std::string&>())) {
            return make_error(ErrorCode::InvalidArgument, "must be a string of valid UTF-8",
                              "labels." + name);
        }
        alert.labels.emplace(name, value.get<std::string>());
    }
    const Json status = body.value("status", Json("firing"));
    const auto parsed =
        status.is_string() ? parse_alert_status(status.get<std::string>()) : std::nullopt;
    if (!parsed) {
        return make_error(ErrorCode::InvalidArgument, "status must be \"firing\" or \"resolved\"",
                          "status");
    }
    alert.status = *parsed;
    alert.starts_at = Timestamp::now();
    if (alert.status == AlertStatus::Resolved) {
        alert.ends_at = alert.starts_at;
    }
    alert.fingerprint = fingerprint_of(alert.labels);
    alert.fingerprint_computed = true;
    return alert;
}

Result<std::shared_ptr<DeliveryRecord>> read_plan_request(const http::Request& req) {
    const Json body = Json::parse(req.body, nullptr, false);
    if (body.is_discarded()) {
        return make_error(ErrorCode::InvalidArgument,
                          "the body is not valid JSON: " + json_text::parse_problem(req.body));
    }
    if (!body.is_object()) {
        return make_error(ErrorCode::InvalidArgument,
                          "the body must be a JSON object: an Alertmanager notification, or "
                          "{\"labels\": {...}, \"status\": \"firing\"}");
    }
    auto record = std::make_shared<DeliveryRecord>();
    record->received_at = Timestamp::now();
    record->source = "plan";
    record->remote_addr = req.remote_addr;
    if (body.contains("alerts")) {
        auto notification = parse_notification(req.body);
        if (!notification) {
            return notification.error();
        }
        for (auto& alert : notification->alerts) {
            record->alerts.push_back({std::move(alert), AlertOutcome::NoMatchingRunbook, ""});
        }
        return record;
    }
    auto alert = alert_from_labels(body);
    if (!alert) {
        return alert.error();
    }
    record->alerts.push_back({std::move(*alert), AlertOutcome::NoMatchingRunbook, ""});
    return record;
}

const char* run_outcome(const DeliveryReceipt::Skip& skip) {
    return skip.skipped() ? alert_outcome_name(skip.outcome) : "would_start";
}

Json plan_json(const DeliveryRecord& record, const DeliveryReceipt& receipt,
               const std::vector<run::RunPlan>& plans) {
    Json alerts = Json::array();
    for (std::size_t a = 0; a < record.alerts.size(); ++a) {
        const Alert& alert = record.alerts[a].alert;
        Json runbooks = Json::array();
        for (std::size_t i = 0; i < record.runs.size(); ++i) {
            if (record.runs[i].alert_index != a) {
                continue;
            }
            const auto& skip = receipt.skipped[i];
            const auto& plan = plans[i];
            runbooks.push_back(
                {{"runbook", record.runs[i].runbook},
                 {"outcome", run_outcome(skip)},
                 {"detail", skip.reason},
                 {"waits", plan.waits.empty() ? Json(nullptr) : Json(plan.waits)},
                 {"failure", plan.failure.empty() ? Json(nullptr) : Json(plan.failure)},
                 {"steps", plan.steps}});
        }
        alerts.push_back({{"fingerprint", alert.fingerprint},
                          {"status", alert_status_name(alert.status)},
                          {"labels", alert.labels},
                          {"outcome", alert_outcome_name(receipt.alert_outcomes[a])},
                          {"detail", receipt.alert_details[a]},
                          {"runbooks", std::move(runbooks)}});
    }
    return {{"alerts", std::move(alerts)}, {"warnings", record.warnings}};
}

}  // namespace

// POST /api/v1/plan (docs/manual-runs.md, Plan): what a notification would do, recording and
// starting nothing. The store decides duplicates, cooldowns and budgets in a transaction it
// rolls back; the scheduler renders the steps and says what would make a run wait.
void plan_notification(const ApiContext& ctx, http::Request&& req, http::Responder respond) {
    if (!is_json_media_type(req.header("content-type"))) {
        respond(http::json_error(415, "unsupported_media_type",
                                 "send the plan request as "
                                 "application/json"));
        return;
    }
    auto parsed = read_plan_request(req);
    if (!parsed) {
        respond(invalid(parsed.error().message, parsed.error().where));
        return;
    }
    auto record = std::move(*parsed);
    const auto catalog = ctx.catalog->get();
    intake::match_alerts(*catalog, *record);
    ctx.store->plan_delivery(record, [&ctx, catalog, record, respond = std::move(respond)](
                                         Result<DeliveryReceipt> receipt) mutable {
        if (!receipt) {
            respond(http::json_error(503, "store_unavailable",
                                     fmt::format("planning failed: {}", receipt.error().message)));
            return;
        }
        std::vector<run::PlannedRun> runs;
        for (const auto& request : record->runs) {
            runs.push_back(
                {catalog->find(request.runbook), record->alerts[request.alert_index].alert});
        }
        ctx.scheduler->plan(
            std::move(runs), [record, receipt = std::move(*receipt),
                              respond = std::move(respond)](std::vector<run::RunPlan> plans) {
                respond(http::json_response(200, plan_json(*record, receipt, plans)));
            });
    });
}

}  // namespace runbookd::api
