#include <algorithm>
#include <cctype>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "api/routes.hpp"
#include "common/hash.hpp"
#include "common/json_text.hpp"
#include "common/trace.hpp"

namespace runbookd::api {
namespace {

using Json = nlohmann::json;

constexpr std::size_t kMaxTextBytes = 1000;  // actor, reason
constexpr std::size_t kMaxIdempotencyKeyBytes = 255;

// The body of POST /api/v1/runbooks/{name}/runs, checked.
struct ManualRunBody {
    LabelSet labels;
    LabelSet params;  // as given
    bool dry_run = false;
    std::string reason;
    std::string actor;
};

http::Response invalid(std::string message, std::string_view field) {
    return http::json_error(400, "invalid_argument", message, field);
}

// An object of strings (labels, params): each value a string of valid UTF-8.
std::optional<http::Response> read_string_map(const Json& value, const std::string& field,
                                              LabelSet& out) {
    if (!value.is_object()) {
        return invalid(fmt::format("{} must be an object of strings, such as {{\"instance\": "
                                   "\"db1\"}}",
                                   field),
                       field);
    }
    for (const auto& [name, v] : value.items()) {
        const std::string where = field + "." + name;
        if (!v.is_string()) {
            return invalid(fmt::format("{} must be a string, not {}", where, v.type_name()), where);
        }
        const auto& text = v.get_ref<const std::string&>();
        if (name.empty() || !json_text::valid_utf8(name) || !json_text::valid_utf8(text)) {
            return invalid(fmt::format("{}: names must be non-empty and names and values valid "
                                       "UTF-8",
                                       field),
                           where);
        }
        out.emplace(name, text);
    }
    return std::nullopt;
}

// Label names as Alertmanager takes them ([a-zA-Z_][a-zA-Z0-9_]*), so that each becomes its
// own RUNBOOK_LABEL_* variable: "a-b" and "a_b" would both be RUNBOOK_LABEL_A_B.
std::optional<http::Response> check_label_names(const LabelSet& labels) {
    for (const auto& [name, value] : labels) {
        const bool valid = !name.empty() &&
                           std::isdigit(static_cast<unsigned char>(name.front())) == 0 &&
                           std::all_of(name.begin(), name.end(), [](char c) {
                               return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
                           });
        if (!valid) {
            return invalid(fmt::format("label name \"{}\" is not a valid label name (letters, "
                                       "digits and _, not starting with a digit)",
                                       name),
                           "labels." + name);
        }
    }
    return std::nullopt;
}

std::optional<http::Response> read_text(const Json& body, const char* key, std::string& out) {
    if (!body.contains(key)) {
        return std::nullopt;
    }
    const auto& v = body.at(key);
    if (!v.is_string() || v.get_ref<const std::string&>().size() > kMaxTextBytes ||
        !json_text::valid_utf8(v.get_ref<const std::string&>())) {
        return invalid(fmt::format("{} must be a string of at most {} bytes", key, kMaxTextBytes),
                       key);
    }
    out = v.get<std::string>();
    return std::nullopt;
}

std::optional<http::Response> parse_body(const http::Request& req, ManualRunBody& out) {
    if (req.body.empty()) {
        return std::nullopt;
    }
    if (!is_json_media_type(req.header("content-type"))) {
        return http::json_error(415, "unsupported_media_type",
                                "send the run request's body as application/json");
    }
    const Json body = Json::parse(req.body, nullptr, false);
    if (body.is_discarded()) {
        return invalid("the body is not valid JSON: " + json_text::parse_problem(req.body), "");
    }
    if (!body.is_object()) {
        return invalid(
            "the body must be a JSON object such as {\"labels\": {\"instance\": \"db1\"}, "
            "\"params\": {}, \"dry_run\": true, \"reason\": \"...\"}",
            "");
    }
    // A misspelt key would silently change what runs: refuse what is not known.
    for (const auto& [key, value] : body.items()) {
        if (key != "labels" && key != "params" && key != "dry_run" && key != "reason" &&
            key != "actor") {
            return invalid(fmt::format("unknown field \"{}\" (expected labels, params, dry_run, "
                                       "reason and actor)",
                                       key),
                           key);
        }
    }
    if (body.contains("labels")) {
        if (auto e = read_string_map(body.at("labels"), "labels", out.labels)) {
            return e;
        }
        if (auto e = check_label_names(out.labels)) {
            return e;
        }
    }
    if (body.contains("params")) {
        if (auto e = read_string_map(body.at("params"), "params", out.params)) {
            return e;
        }
    }
    if (body.contains("dry_run")) {
        if (!body.at("dry_run").is_boolean()) {
            return invalid("dry_run must be true or false", "dry_run");
        }
        out.dry_run = body.at("dry_run").get<bool>();
    }
    if (auto e = read_text(body, "reason", out.reason)) {
        return e;
    }
    return read_text(body, "actor", out.actor);
}

// Visible ASCII only: the key is compared byte for byte and shown in logs and the audit.
std::optional<http::Response> check_idempotency_key(std::string_view key) {
    bool ok = !key.empty() && key.size() <= kMaxIdempotencyKeyBytes;
    for (const char c : key) {
        ok = ok && c > 0x20 && c < 0x7f;
    }
    if (!ok) {
        return invalid(fmt::format("the Idempotency-Key header must be 1 to {} visible ASCII "
                                   "characters",
                                   kMaxIdempotencyKeyBytes),
                       "Idempotency-Key");
    }
    return std::nullopt;
}

// What a replay must repeat exactly: the runbook, labels, params as given, and dry_run.
std::string request_sha256(const std::string& runbook, const ManualRunBody& body) {
    const Json canonical = {{"runbook", runbook},
                            {"labels", body.labels},
                            {"params", body.params},
                            {"dry_run", body.dry_run}};
    return sha256_hex(canonical.dump(-1, ' ', false, Json::error_handler_t::replace));
}

std::vector<std::string> warnings_for(const Runbook& runbook, const LabelSet& labels) {
    std::vector<std::string> out;
    if (!runbook.matchers.empty() && !matches_all(runbook.matchers, labels)) {
        std::string matchers;
        for (const auto& m : runbook.matchers) {
            matchers += (matchers.empty() ? "" : ", ") + m.to_string();
        }
        out.push_back(
            fmt::format("the labels do not match runbook {}'s matchers ({}); a manual "
                        "run does not need them to",
                        runbook.name, matchers));
    }
    return out;
}

// The run as GET /api/v1/runs/{id} shows it, plus `warnings`, read on the connection's thread.
http::Response run_answer(Store* store, unsigned status, RunId id,
                          std::vector<std::string> warnings) {
    http::Response response;
    response.status = status;
    response.headers.emplace_back("Location", fmt::format("/api/v1/runs/{}", id));
    response.render_body = [store, id, warnings = std::move(warnings)] {
        auto detail = store->get_run(id);
        Json out = detail ? run_detail_json(*detail) : Json{{"id", id}};
        out["warnings"] = warnings;
        return out.dump(-1, ' ', false, Json::error_handler_t::replace);
    };
    return response;
}

void on_recorded(const ApiContext& ctx, const std::shared_ptr<const ManualRunRequest>& request,
                 Result<ManualRunReceipt> r, std::vector<std::string> warnings,
                 http::Responder respond) {
    using Outcome = ManualRunReceipt::Outcome;
    if (!r) {
        respond(r.error().code == ErrorCode::Unavailable
                    ? http::json_error(503, "store_unavailable",
                                       fmt::format("recording the run failed: {}; nothing runs",
                                                   r.error().message))
                    : http::error_response(r.error()));
        return;
    }
    const RunId id = r->run;
    if (r->outcome == Outcome::KeyReused) {
        respond(http::json_error(
            409, "idempotency_key_reused",
            fmt::format("the Idempotency-Key was used for run {} with a different request "
                        "(runbook, labels, params or dry_run); use a new key",
                        id),
            "Idempotency-Key"));
        return;
    }
    if (r->outcome == Outcome::Replayed) {
        respond(run_answer(ctx.store, 200, id, std::move(warnings)));
        return;
    }
    if (request->dry_run) {
        ctx.scheduler->dry_run(id, [store = ctx.store, id, warnings = std::move(warnings),
                                    respond = std::move(respond)](const Status&) mutable {
            // Whatever happened, the run as recorded tells it.
            respond(run_answer(store, 201, id, std::move(warnings)));
        });
        return;
    }
    ctx.scheduler->enqueue({id});
    respond(run_answer(ctx.store, 201, id, std::move(warnings)));
}

}  // namespace

// POST /api/v1/runbooks/{name}/runs (docs/manual-runs.md): validated in full, then the run and
// its run.requested event are committed together, then the run goes to the scheduler.
void start_manual_run(const ApiContext& ctx, http::Request&& req, http::Responder respond) {
    if (ctx.health->draining) {
        respond(draining_response(
            "runbookd is shutting down and starts no new runs; nothing was recorded; retry"));
        return;
    }
    const std::string& name = req.params.at("name");
    // Before the lookup: a principal limited to other runbooks learns nothing about this one.
    if (ctx.auth != nullptr) {
        if (auto refusal = ctx.auth->check_runbook(req, auth::Scope::Run, name)) {
            respond(std::move(*refusal));
            return;
        }
    }
    auto runbook = ctx.catalog->get()->find(name);
    if (!runbook) {
        respond(http::json_error(404, "not_found",
                                 fmt::format("runbook \"{}\" does not exist", name), "name"));
        return;
    }
    ManualRunBody body;
    if (auto e = parse_body(req, body)) {
        respond(std::move(*e));
        return;
    }
    if (refuse_claimed_actor(req, body.actor, respond)) {
        return;
    }
    std::optional<std::string> key;
    for (const auto& [header, value] : req.headers) {
        if (header == "idempotency-key") {
            key = value;
        }
    }
    if (key) {
        if (auto e = check_idempotency_key(*key)) {
            respond(std::move(*e));
            return;
        }
    }
    auto params = runbook->resolve_params(body.params);
    if (!params) {
        respond(invalid(params.error().message, params.error().where));
        return;
    }
    auto request = std::make_shared<ManualRunRequest>();
    request->runbook = runbook->name;
    request->runbook_hash = runbook->content_hash;
    request->actor = request_actor(req, body.actor);
    request->reason = body.reason;
    request->labels = body.labels;
    request->params = std::move(*params);
    request->dry_run = body.dry_run;
    request->idempotency_key = key.value_or("");
    request->request_sha256 = request_sha256(runbook->name, body);
    request->requested_at = Timestamp::now();
    request->traceparent =
        trace::child_of(trace::parse_traceparent(req.header("traceparent"))).header();
    auto warnings = warnings_for(*runbook, body.labels);
    ctx.store->record_manual_run(
        request, [&ctx, request, warnings = std::move(warnings),
                  respond = std::move(respond)](Result<ManualRunReceipt> r) mutable {
            on_recorded(ctx, request, std::move(r), std::move(warnings), std::move(respond));
        });
}

}  // namespace runbookd::api
