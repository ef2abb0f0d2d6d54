#include "api/routes.hpp"

#include <charconv>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "api/follow.hpp"
#include "common/hash.hpp"
#include "common/json_text.hpp"
#include "common/trace.hpp"
#include "metrics/runbookd_metrics.hpp"

namespace runbookd::api {
namespace {

using Json = nlohmann::json;

Json optional_time(const std::optional<Timestamp>& t) {
    return t ? Json(t->to_rfc3339_millis()) : Json(nullptr);
}

Json labels_json(const LabelSet& labels) {
    Json out = Json::object();
    for (const auto& [k, v] : labels) {
        out[k] = v;
    }
    return out;
}

Json run_json(const RunSummary& r) {
    Json out = {
        {"id", r.id},
        {"runbook", r.runbook},
        {"runbook_hash", r.runbook_hash},
        {"trigger", r.trigger},
        {"actor", r.actor},
        {"state", run_state_name(r.state)},
        {"reason", r.reason},
        {"cancelled_by", r.cancelled_by.empty() ? Json(nullptr) : Json(r.cancelled_by)},
        {"alert_id", r.alert_id ? Json(*r.alert_id) : Json(nullptr)},
        {"fingerprint", r.fingerprint},
        {"alertname", r.alertname},
        {"created_at", r.created_at.to_rfc3339_millis()},
        {"trace_id",
         r.traceparent.empty() ? Json(nullptr) : Json(trace::trace_id_of(r.traceparent))},
        {"traceparent", r.traceparent.empty() ? Json(nullptr) : Json(r.traceparent)},
        {"started_at", optional_time(r.started_at)},
        {"finished_at", optional_time(r.finished_at)},
        {"labels", r.labels ? labels_json(*r.labels) : Json(nullptr)},
        {"params", r.params ? labels_json(*r.params) : Json(nullptr)},
        {"dry_run", r.dry_run},
        {"request_reason", r.request_reason},
        {"idempotency_key", r.idempotency_key.empty() ? Json(nullptr) : Json(r.idempotency_key)}};
    if (r.started_at && r.finished_at) {
        out["duration_ms"] = r.finished_at->millis_since(*r.started_at);
    }
    return out;
}

Json alert_json(const Alert& a) {
    return {{"fingerprint", a.fingerprint},
            {"status", alert_status_name(a.status)},
            {"labels", labels_json(a.labels)},
            {"annotations", labels_json(a.annotations)},
            {"starts_at", a.starts_at.to_rfc3339()},
            {"ends_at", a.ends_at ? Json(a.ends_at->to_rfc3339()) : Json(nullptr)},
            {"generator_url", a.generator_url}};
}

// Output excerpts are raw bytes. Valid UTF-8 is shown as is; otherwise the text field has each
// invalid sequence replaced by U+FFFD and `<name>_base64` carries the exact bytes.
void add_output(Json& out, const std::string& name, const std::string& bytes) {
    out[name] = bytes;
    if (!json_text::valid_utf8(bytes)) {
        out[name + "_base64"] = base64(bytes);
    }
}

Json attempt_json(const AttemptRecord& a) {
    Json out = {{"id", a.id},
                {"step", a.start.step},
                {"step_index", a.start.step_index},
                {"attempt", a.start.attempt},
                {"kind", a.start.kind},
                {"argv", a.start.argv},
                {"cwd", a.start.cwd},
                {"state", a.state},
                {"started_at", a.start.started_at.to_rfc3339_millis()}};
    if (a.end) {
        const AttemptEnd& e = *a.end;
        out["exit_code"] = e.exit_code ? Json(*e.exit_code) : Json(nullptr);
        out["signal"] = e.signal ? Json(*e.signal) : Json(nullptr);
        out["error"] = e.error;
        out["finished_at"] = e.finished_at.to_rfc3339_millis();
        out["duration_ms"] = e.duration_ms;
        out["stdout_bytes"] = e.stdout_bytes;
        out["stderr_bytes"] = e.stderr_bytes;
        add_output(out, "stdout", e.stdout_excerpt);
        add_output(out, "stderr", e.stderr_excerpt);
        if (!e.output_path.empty()) {
            out["output_file"] = {{"path", e.output_path},
                                  {"stored_bytes", e.output_stored_bytes},
                                  {"truncated", e.output_truncated}};
        }
        if (!e.outputs.empty()) {
            out["outputs"] = Json::parse(e.outputs, nullptr, false);
        }
    }
    return out;
}

Json params_json(const Runbook& r) {
    Json out = Json::array();
    for (const auto& p : r.params) {
        out.push_back({{"name", p.name},
                       {"description", p.description},
                       {"required", p.required},
                       {"default", p.default_value ? Json(*p.default_value) : Json(nullptr)},
                       {"pattern", p.pattern.empty() ? Json(nullptr) : Json(p.pattern)},
                       {"choices", p.choices}});
    }
    return out;
}

Json runbook_json(const Runbook& r) {
    Json matchers = Json::array();
    for (const auto& m : r.matchers) {
        matchers.push_back(m.to_string());
    }
    Json on = Json::array();
    if (r.on_firing) {
        on.push_back("firing");
    }
    if (r.on_resolved) {
        on.push_back("resolved");
    }
    Json steps = Json::array();
    for (const auto& s : r.steps) {
        steps.push_back({{"name", s.name}, {"kind", s.kind}, {"description", s.description}});
    }
    return {{"name", r.name},
            {"description", r.description},
            {"source_file", r.source_file},
            {"content_hash", r.content_hash},
            {"matchers", matchers},
            {"on", on},
            {"timeout", r.timeout ? Json(format_duration(*r.timeout)) : Json(nullptr)},
            {"params", params_json(r)},
            {"steps", steps}};
}

Json approval_json(const ApprovalRecord& a) {
    return {{"step", a.step},
            {"step_index", a.step_index},
            {"state", approval_state_name(a.state)},
            {"approvers", a.approvers},
            {"message", a.message},
            {"on_timeout", a.approve_on_timeout ? "approve" : "deny"},
            {"requested_at", a.requested_at.to_rfc3339_millis()},
            {"deadline", a.deadline.to_rfc3339_millis()},
            {"decided_by", a.decided_by.empty() ? Json(nullptr) : Json(a.decided_by)},
            {"decided_at", optional_time(a.decided_at)},
            {"comment", a.comment.empty() ? Json(nullptr) : Json(a.comment)}};
}

std::optional<std::int64_t> parse_id(std::string_view text) {
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || value <= 0) {
        return std::nullopt;
    }
    return value;
}

// The route's {id} as a run id; answers 400 and returns nullopt when it is not one.
std::optional<RunId> run_id_param(const http::Request& req, const http::Responder& respond) {
    const auto id = parse_id(req.params.at("id"));
    if (!id) {
        respond(http::json_error(400, "invalid_argument",
                                 fmt::format("\"{}\" is not a run id", req.params.at("id")), "id"));
    }
    return id;
}

void list_runs(const ApiContext& ctx, const http::Request& req, const http::Responder& respond) {
    RunFilter filter;
    if (const auto state = req.query_param("state"); !state.empty()) {
        filter.state = parse_run_state(state);
        if (!filter.state) {
            respond(http::json_error(400, "invalid_argument",
                                     fmt::format("unknown run state \"{}\" (expected queued, "
                                                 "running, waiting_approval, succeeded, failed, "
                                                 "cancelled or interrupted)",
                                                 state),
                                     "state"));
            return;
        }
    }
    filter.runbook = req.query_param("runbook");
    if (const auto limit = req.query_param("limit"); !limit.empty()) {
        const auto n = parse_id(limit);
        if (!n || *n > 1000) {
            respond(http::json_error(400, "invalid_argument",
                                     "limit must be a whole number from 1 to 1000", "limit"));
            return;
        }
        filter.limit = static_cast<int>(*n);
    }
    if (const auto before = req.query_param("before"); !before.empty()) {
        filter.before_id = parse_id(before);
        if (!filter.before_id) {
            respond(http::json_error(400, "invalid_argument", "before must be a run id", "before"));
            return;
        }
    }
    auto runs = ctx.store->list_runs(filter);
    if (!runs) {
        respond(http::error_response(runs.error()));
        return;
    }
    Json items = Json::array();
    for (const auto& r : *runs) {
        items.push_back(run_json(r));
    }
    respond(http::json_response(200, {{"runs", items}}));
}

// GET /api/v1/runs/{id}/follow: server-sent events until the run has ended (api/follow.cpp).
void follow(const ApiContext& ctx, const http::Request& req, const http::Responder& respond) {
    const auto id = run_id_param(req, respond);
    if (!id) {
        return;
    }
    if (auto found = ctx.store->load_run(*id); !found) {
        respond(http::error_response(found.error()));
        return;
    }
    http::Response response;
    response.content_type = "text/event-stream";
    response.stream = follow_run(*ctx.store, *id, ctx.output_dir);
    respond(std::move(response));
}

void show_run(const ApiContext& ctx, const http::Request& req, const http::Responder& respond) {
    const auto id = run_id_param(req, respond);
    if (!id) {
        return;
    }
    auto detail = ctx.store->get_run(*id);
    if (!detail) {
        respond(http::error_response(detail.error()));
        return;
    }
    respond(http::json_response(200, run_detail_json(*detail)));
}

// The optional JSON body {"actor": "...", "<text_field>": "..."} of cancel, approve and deny:
// fills `actor` and `text`, or answers the error and returns false. `what` names the request.
bool read_actor_body(const http::Request& req, const http::Responder& respond,
                     std::string_view what, const char* text_field, std::string& actor,
                     std::string& text) {
    if (req.body.empty()) {
        return true;
    }
    if (!is_json_media_type(req.header("content-type"))) {
        respond(
            http::json_error(415, "unsupported_media_type",
                             fmt::format("send the {} request's body as application/json", what)));
        return false;
    }
    const Json body = Json::parse(req.body, nullptr, false);
    if (!body.is_object()) {
        respond(http::json_error(400, "invalid_argument",
                                 fmt::format("the body must be a JSON object such as {{\"actor\": "
                                             "\"alice\", \"{}\": \"...\"}}",
                                             text_field)));
        return false;
    }
    // A misspelt key would silently lose who asked: refuse what is not known.
    for (const auto& [key, value] : body.items()) {
        if (key != "actor" && key != text_field) {
            respond(http::json_error(
                400, "invalid_argument",
                fmt::format("unknown field \"{}\" (expected actor and {})", key, text_field), key));
            return false;
        }
    }
    for (const auto& [key, field] : {std::pair{"actor", &actor}, {text_field, &text}}) {
        if (!body.contains(key)) {
            continue;
        }
        const auto& v = body.at(key);
        if (!v.is_string() || v.get_ref<const std::string&>().size() > 1000 ||
            !json_text::valid_utf8(v.get_ref<const std::string&>())) {
            respond(http::json_error(400, "invalid_argument",
                                     fmt::format("{} must be a string of at most 1000 bytes", key),
                                     key));
            return false;
        }
        *field = v.get<std::string>();
    }
    return !refuse_claimed_actor(req, actor, respond);
}

// For run and approve requests about an existing run: 403 when the caller's runbooks allow-list
// does not hold the run's runbook, the lookup's error when the run cannot be read, else nullopt.
std::optional<http::Response> check_run_allowed(const ApiContext& ctx, const http::Request& req,
                                                auth::Scope scope, std::int64_t id) {
    if (!req.principal || !req.principal->limited() || ctx.auth == nullptr) {
        return std::nullopt;
    }
    auto detail = ctx.store->get_run(id);
    if (!detail) {
        return http::error_response(detail.error());
    }
    return ctx.auth->check_runbook(req, scope, detail->run.runbook);
}

// POST /api/v1/runs/{id}/cancel with an optional JSON body {"actor": "...", "reason": "..."}.
void cancel_run(const ApiContext& ctx, const http::Request& req, http::Responder respond) {
    const auto id = run_id_param(req, respond);
    if (!id) {
        return;
    }
    if (auto refusal = check_run_allowed(ctx, req, auth::Scope::Run, *id)) {
        respond(std::move(*refusal));
        return;
    }
    std::string actor;
    std::string reason;
    if (!read_actor_body(req, respond, "cancel", "reason", actor, reason)) {
        return;
    }
    ctx.scheduler->cancel(
        *id, request_actor(req, std::move(actor)), std::move(reason),
        [id = *id, respond = std::move(respond)](Result<run::CancelOutcome> r) {
            if (!r) {
                respond(http::error_response(r.error()));
                return;
            }
            respond(http::json_response(
                r->stopping ? 202 : 200,
                {{"id", id}, {"state", run_state_name(r->state)}, {"stopping", r->stopping}}));
        });
}

// The status and error code of an answer that was not taken (docs/approvals.md, Failures).
std::pair<unsigned, const char*> refusal_status(run::AnswerOutcome::Refusal why) {
    using Refusal = run::AnswerOutcome::Refusal;
    switch (why) {
        case Refusal::NotFound:
            return {404, "not_found"};
        case Refusal::NoApproval:
            return {409, "no_approval"};
        case Refusal::RunEnded:
            return {409, "run_ended"};
        case Refusal::AlreadyDecided:
            return {409, "already_decided"};
        case Refusal::NotWaiting:
            return {409, "not_waiting"};
        case Refusal::NotApprover:
            return {403, "not_an_approver"};
        case Refusal::Unavailable:
            return {503, "store_unavailable"};
    }
    return {500, "internal"};
}

// POST /api/v1/runs/{id}/steps/{step}/approve and .../deny with an optional JSON body
// {"actor": "...", "comment": "..."}.
void answer_approval(const ApiContext& ctx, const http::Request& req, http::Responder respond,
                     bool approve) {
    const auto id = parse_id(req.params.at("id"));
    if (!id) {
        respond(http::json_error(400, "invalid_argument",
                                 fmt::format("\"{}\" is not a run id", req.params.at("id")), "id"));
        return;
    }
    if (auto refusal = check_run_allowed(ctx, req, auth::Scope::Approve, *id)) {
        respond(std::move(*refusal));
        return;
    }
    run::ApprovalAnswer answer;
    answer.step = req.params.at("step");
    answer.approve = approve;
    if (!read_actor_body(req, respond, approve ? "approve" : "deny", "comment", answer.actor,
                         answer.comment)) {
        return;
    }
    answer.actor = request_actor(req, std::move(answer.actor));
    ctx.scheduler->answer(
        *id, std::move(answer), [id = *id, respond = std::move(respond)](run::AnswerOutcome out) {
            if (out.refused) {
                const auto [status, code] = refusal_status(*out.refused);
                http::Response response = http::json_error(status, code, out.message);
                if (out.approval) {
                    Json body = Json::parse(response.body, nullptr, false);
                    body["approval"] = approval_json(*out.approval);
                    response = http::json_response(status, body);
                }
                respond(std::move(response));
                return;
            }
            Json body = {{"id", id}};
            body["approval"] = out.approval ? approval_json(*out.approval) : Json(nullptr);
            respond(http::json_response(200, body));
        });
}

void receive_alertmanager(const ApiContext& ctx, http::Request&& req, http::Responder respond) {
    using metrics::NotificationOutcome;
    auto& m = metrics::runbookd_metrics();
    if (ctx.health->draining) {
        m.notification(NotificationOutcome::Draining);
        // Refused before parsing: nothing of the delivery is recorded or run, and Alertmanager
        // retries, reaching the next runbookd.
        respond(draining_response(
            "runbookd is shutting down and takes no new deliveries; nothing from this delivery "
            "was recorded or run; retry"));
        return;
    }
    if (auto why = ctx.intake->overloaded()) {
        m.notification(NotificationOutcome::Overloaded);
        // 503, never 429: Alertmanager retries a 5xx within the same notification, a 4xx only
        // at the next group interval.
        auto response = http::json_error(
            503, "overloaded", *why + "; nothing from this delivery was recorded or run; retry");
        response.headers.emplace_back("Retry-After", "5");
        respond(std::move(response));
        return;
    }
    const auto content_type = req.header("content-type");
    if (!is_json_media_type(content_type)) {
        m.notification(NotificationOutcome::UnsupportedMediaType);
        respond(http::json_error(
            415, "unsupported_media_type",
            content_type.empty()
                ? std::string("Content-Type is missing; send application/json")
                : fmt::format("Content-Type \"{}\" is not supported; send application/json",
                              content_type)));
        return;
    }
    intake::Delivery delivery{std::move(req.body), std::move(req.remote_addr),
                              std::string(req.header("user-agent")),
                              std::string(req.header("traceparent"))};
    ctx.intake->handle(std::move(delivery),
                       [&m, respond = std::move(respond)](intake::IntakeReply r) {
                           m.notification(r.status == 200   ? NotificationOutcome::Accepted
                                          : r.status == 400 ? NotificationOutcome::Invalid
                                                            : NotificationOutcome::Unavailable);
                           http::Response response;
                           response.status = r.status;
                           response.body = std::move(r.body);
                           response.render_body = std::move(r.render_body);
                           if (r.status == 503) {
                               response.headers.emplace_back("Retry-After", "5");
                           }
                           respond(std::move(response));
                       });
}

void livez(const ApiContext& ctx, const http::Responder& respond) {
    const auto age_ms = Health::now_ms() - ctx.health->engine_heartbeat_ms.load();
    if (age_ms >= kLivenessLimit.count()) {
        respond(http::json_response(
            503, {{"live", false},
                  {"reason", fmt::format("the run engine thread has not responded for {:.1f} s",
                                         static_cast<double>(age_ms) / 1000.0)}}));
        return;
    }
    respond(http::json_response(200, {{"live", true}}));
}

bool is_ready(const ApiContext& ctx) {
    const Health& h = *ctx.health;
    return h.store_open && h.recovered && !h.draining && !ctx.intake->overloaded();
}

// The registry's metrics, then the values read now: health, the run queue, the process.
void serve_metrics(const ApiContext& ctx, const http::Responder& respond) {
    using metrics::Type;
    http::Response response;
    response.content_type = std::string(metrics::kContentType);
    std::string& out = response.body;
    out = metrics::runbookd_metrics().render();
    const Health& h = *ctx.health;
    metrics::append_single(out, "runbookd_ready",
                           "1 when runbookd is ready to take deliveries (what /readyz says).",
                           Type::Gauge, is_ready(ctx) ? 1 : 0);
    metrics::append_single(out, "runbookd_draining",
                           "1 while runbookd shuts down and refuses new deliveries.", Type::Gauge,
                           h.draining ? 1 : 0);
    const run::Scheduler& s = *ctx.scheduler;
    metrics::append_single(out, "runbookd_runs_queued",
                           "Runs recorded as queued that have not started executing yet.",
                           Type::Gauge, static_cast<double>(s.waiting_runs()));
    metrics::append_single(out, "runbookd_runs_running", "Runs executing now.", Type::Gauge,
                           static_cast<double>(s.running_runs()));
    metrics::append_single(
        out, "runbookd_oldest_queued_run_age_seconds",
        "How long the oldest run still waiting to start has waited in this runbookd (0 when "
        "none waits).",
        Type::Gauge, static_cast<double>(s.oldest_queued_age().count()) / 1000.0);
    metrics::append_single(out, "runbookd_runs_waiting_approval",
                           "Runs parked before a step until someone approves or denies it.",
                           Type::Gauge, static_cast<double>(s.approval_waiting_runs()));
    metrics::append_process_metrics(out);
    respond(std::move(response));
}

void readyz(const ApiContext& ctx, const http::Responder& respond) {
    const Health& h = *ctx.health;
    Json reasons = Json::array();
    const auto add = [&reasons](std::string_view code, std::string_view message) {
        reasons.push_back({{"code", code}, {"message", message}});
    };
    if (!h.store_open) {
        add("store_closed", "the database is not open");
    }
    if (!h.recovered) {
        add("recovering",
            "runs left unfinished by the previous runbookd are still being recovered");
    }
    if (h.draining) {
        add("draining",
            "runbookd is shutting down: it takes no new deliveries and lets active runs finish");
    }
    if (auto why = ctx.intake->overloaded()) {
        add("overloaded", *why);
    }
    if (!reasons.empty()) {
        respond(http::json_response(503, {{"ready", false}, {"reasons", reasons}}));
        return;
    }
    respond(http::json_response(200, {{"ready", true}}));
}

}  // namespace

// GET /api/v1/runs/{id}: the run, its alert, its attempts and a dry run's plan.
Json run_detail_json(const RunDetail& detail) {
    Json out = run_json(detail.run);
    out["alert"] = detail.alert ? alert_json(*detail.alert) : Json(nullptr);
    Json attempts = Json::array();
    for (const auto& a : detail.attempts) {
        attempts.push_back(attempt_json(a));
    }
    out["attempts"] = attempts;
    Json approvals = Json::array();
    for (const auto& a : detail.approvals) {
        approvals.push_back(approval_json(a));
    }
    out["approvals"] = approvals;
    if (!detail.plan.empty()) {
        out["plan"] = Json::parse(detail.plan, nullptr, false);
    }
    return out;
}

http::Response draining_response(std::string_view message) {
    auto response = http::json_error(503, "draining", message);
    response.headers.emplace_back("Retry-After", "5");
    return response;
}

// Who asks for something (docs/auth.md, Actor): the authenticated principal ("token:NAME");
// without tokens, the actor the body names, else "http:<remote address>". Handlers refuse a
// body naming an actor alongside credentials first (refuse_claimed_actor).
std::string request_actor(const http::Request& req, std::string given) {
    if (req.principal || given.empty()) {
        return auth::actor(req);
    }
    return given;
}

bool refuse_claimed_actor(const http::Request& req, std::string_view given,
                          const http::Responder& respond) {
    if (given.empty() || !req.principal) {
        return false;
    }
    // With credentials the record says whose they are; nobody may name someone else.
    respond(http::json_error(
        400, "invalid_argument",
        fmt::format("actor comes from the credentials ({}); leave it out", auth::actor(req)),
        "actor"));
    return true;
}

bool is_json_media_type(std::string_view content_type) {
    const auto semicolon = content_type.find(';');
    std::string_view type = content_type.substr(0, semicolon);
    while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) {
        type.remove_suffix(1);
    }
    while (!type.empty() && (type.front() == ' ' || type.front() == '\t')) {
        type.remove_prefix(1);
    }
    constexpr std::string_view kJson = "application/json";
    if (type.size() != kJson.size()) {
        return false;
    }
    for (std::size_t i = 0; i < type.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(type[i])) != kJson[i]) {
            return false;
        }
    }
    return true;
}

// 422, not 400: the request is well formed; what it points at, the runbooks directory, cannot
// be taken. runbookctl and scripts tell the two apart without parsing the message.
http::Response reload_response(const ReloadOutcome& outcome) {
    using R = ReloadOutcome::Result;
    if (outcome.result == R::Reloaded) {
        return http::json_response(200, {{"runbooks", outcome.runbooks},
                                         {"added", outcome.added},
                                         {"removed", outcome.removed},
                                         {"changed", outcome.changed}});
    }
    const bool invalid = outcome.result == R::InvalidRunbooks;
    auto response = http::json_error(
        invalid ? 422 : 503, invalid ? "invalid_runbooks" : "unavailable",
        invalid ? fmt::format("runbooks not reloaded: {} error{}; the previous runbooks stay "
                              "in force",
                              outcome.errors.size(), outcome.errors.size() == 1 ? "" : "s")
                : "runbooks not reloaded; the previous runbooks stay in force");
    auto body = Json::parse(response.body);
    body["error"]["errors"] = outcome.errors;
    return http::json_response(response.status, body);
}

void reload_runbooks(const ApiContext& ctx, const http::Request& req, http::Responder respond) {
    if (ctx.health->draining) {
        respond(http::json_error(503, "draining", "runbookd is shutting down; nothing reloaded"));
        return;
    }
    ctx.reload(auth::actor(req), [respond = std::move(respond)](ReloadOutcome outcome) {
        respond(reload_response(outcome));
    });
}

void add_routes(http::Router& router, const ApiContext& context) {
    using auth::Access;
    using auth::Scope;
    const ApiContext* ctx = &context;
    if (ctx->auth != nullptr) {
        router.set_guard(
            [auth = ctx->auth](const Access& access, std::string_view route, http::Request& req) {
                return auth->check(access, route, req);
            });
    }
    router.add("GET", "/", Access::open(), [](http::Request&&, http::Responder respond) {
        respond(http::json_response(200, {{"name", "runbookd"}, {"version", RUNBOOKD_VERSION}}));
    });
    router.add("GET", "/livez", Access::open(),
               [ctx](http::Request&&, http::Responder respond) { livez(*ctx, respond); });
    router.add("GET", "/readyz", Access::open(),
               [ctx](http::Request&&, http::Responder respond) { readyz(*ctx, respond); });
    router.add(
        "POST", "/api/v1/webhooks/alertmanager", Access::scope(Scope::Webhook),
        [ctx](http::Request&& req, http::Responder respond) {
            receive_alertmanager(*ctx, std::move(req), std::move(respond));
        },
        [](unsigned status) {
            using metrics::NotificationOutcome;
            if (status == 413) {
                metrics::runbookd_metrics().notification(NotificationOutcome::TooLarge);
            } else if (status == 400) {
                metrics::runbookd_metrics().notification(NotificationOutcome::Invalid);
            }
        });
    router.add("GET", "/metrics", Access::scope(Scope::Read),
               [ctx](http::Request&&, http::Responder respond) { serve_metrics(*ctx, respond); });
    router.add(
        "GET", "/api/v1/runs", Access::scope(Scope::Read),
        [ctx](http::Request&& req, http::Responder respond) { list_runs(*ctx, req, respond); });
    router.add(
        "GET", "/api/v1/runs/{id}", Access::scope(Scope::Read),
        [ctx](http::Request&& req, http::Responder respond) { show_run(*ctx, req, respond); });
    router.add("GET", "/api/v1/runs/{id}/follow", Access::scope(Scope::Read),
               [ctx](http::Request&& req, http::Responder respond) { follow(*ctx, req, respond); });
    router.add("POST", "/api/v1/runs/{id}/cancel", Access::scope(Scope::Run),
               [ctx](http::Request&& req, http::Responder respond) {
                   cancel_run(*ctx, req, std::move(respond));
               });
    router.add("POST", "/api/v1/runs/{id}/steps/{step}/approve", Access::scope(Scope::Approve),
               [ctx](http::Request&& req, http::Responder respond) {
                   answer_approval(*ctx, req, std::move(respond), true);
               });
    router.add("POST", "/api/v1/runs/{id}/steps/{step}/deny", Access::scope(Scope::Approve),
               [ctx](http::Request&& req, http::Responder respond) {
                   answer_approval(*ctx, req, std::move(respond), false);
               });
    router.add("POST", "/api/v1/runbooks/{name}/runs", Access::scope(Scope::Run),
               [ctx](http::Request&& req, http::Responder respond) {
                   start_manual_run(*ctx, std::move(req), std::move(respond));
               });
    router.add("POST", "/api/v1/plan", Access::scope(Scope::Run),
               [ctx](http::Request&& req, http::Responder respond) {
                   plan_notification(*ctx, std::move(req), std::move(respond));
               });
    router.add("POST", "/api/v1/reload", Access::scope(Scope::Admin),
               [ctx](http::Request&& req, http::Responder respond) {
                   reload_runbooks(*ctx, req, std::move(respond));
               });
    router.add("GET", "/api/v1/runbooks", Access::scope(Scope::Read),
               [ctx](http::Request&&, http::Responder respond) {
                   Json items = Json::array();
                   for (const auto& r : ctx->catalog->get()->all()) {
                       items.push_back(runbook_json(*r));
                   }
                   respond(http::json_response(200, {{"runbooks", items}}));
               });
}

}  // namespace runbookd::api
