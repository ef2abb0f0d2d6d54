#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <runbookd/step_parser.hpp>
#include <runbookd/store.hpp>

#include "auth/auth.hpp"
#include "ctl/settings.hpp"
#include "http/client.hpp"
#include "python/check.hpp"
#include "store/audit.hpp"

namespace {

using Json = nlohmann::json;

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;
// `run` when the run has ended (--wait, or a dry run): how it ended.
constexpr int kExitRunFailed = 4;
constexpr int kExitRunCancelled = 5;
constexpr int kExitRunInterrupted = 6;
// runbookd refused the credentials (401) or the permission (403).
constexpr int kExitUnauthenticated = 7;
constexpr int kExitForbidden = 8;

struct Options {
    std::string url;
    std::string token;
    runbookd::http::ClientTls tls;
    std::string output = "table";
};

// A value for one table cell or one line: control characters (from alert labels, say) are
// shown escaped, so that no value can break the layout or forge a line.
std::string text_of(const Json& v) {
    if (v.is_null()) {
        return "-";
    }
    if (!v.is_string()) {
        return v.dump();
    }
    std::string out;
    for (const char c : v.get<std::string>()) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (u < 0x20 || u == 0x7f) {
            out += fmt::format("\\x{:02x}", u);
        } else {
            out += c;
        }
    }
    return out;
}

// Prints rows as left-aligned columns, each as wide as its widest cell.
void print_table(const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> width(header.size());
    for (std::size_t i = 0; i < header.size(); ++i) {
        width[i] = header[i].size();
        for (const auto& row : rows) {
            width[i] = std::max(width[i], row[i].size());
        }
    }
    const auto print_row = [&](const std::vector<std::string>& row) {
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i) {
            line += i + 1 == row.size() ? row[i] : fmt::format("{:<{}}  ", row[i], width[i]);
        }
        std::cout << line << "\n";
    };
    print_row(header);
    for (const auto& row : rows) {
        print_row(row);
    }
}

using Headers = std::vector<std::pair<std::string, std::string>>;

// `headers` with the token, if any, as a bearer token.
Headers with_token(const Options& o, Headers headers = {}) {
    if (!o.token.empty()) {
        headers.emplace_back("Authorization", "Bearer " + o.token);
    }
    return headers;
}

// One request to the API, with the token and the TLS settings. A body is sent as JSON.
runbookd::Result<runbookd::http::ClientResponse> api_request(
    const Options& o, const std::string& method, const std::string& path,
    std::chrono::milliseconds timeout = std::chrono::seconds(10), const std::string& body = {}) {
    const Headers headers =
        with_token(o, body.empty() ? Headers{} : Headers{{"Content-Type", "application/json"}});
    return runbookd::http::send_request(method, o.url + path, body, headers, timeout, o.tls);
}

// For 401 and 403 permission_denied: prints what to do and returns the exit code; 0 otherwise.
int auth_failure(const Options& o, unsigned status, const Json& body) {
    const std::string code = body.is_object() && body.contains("error")
                                 ? body["error"].value("code", std::string())
                                 : std::string();
    // Other 403s (an approver who is not on the list) are runbookd's answer, not a refusal of
    // the token.
    if (status != 401 && !(status == 403 && code == "permission_denied")) {
        return 0;
    }
    const std::string message = body.is_object() && body.contains("error")
                                    ? text_of(body["error"].value("message", Json()))
                                    : "";
    if (status == 401) {
        std::cerr << "runbookctl: runbookd at " << o.url << " refused the credentials (" << message
                  << "): "
                  << (o.token.empty() ? "no token given; pass --token, set RUNBOOKD_TOKEN or "
                                        "put token: in the config file"
                                      : "the token is not valid")
                  << "\n";
        return kExitUnauthenticated;
    }
    std::cerr << "runbookctl: permission denied: " << message << "\n";
    return kExitForbidden;
}

// GETs a path of the API; prints the error and returns nullopt on failure.
std::optional<Json> get_json(const Options& o, const std::string& path, int& exit_code) {
    auto response = api_request(o, "GET", path);
    if (!response) {
        std::cerr << "runbookctl: cannot reach runbookd at " << o.url << ": "
                  << response.error().message << "\n";
        exit_code = kExitUnreachable;
        return std::nullopt;
    }
    Json body = Json::parse(response->body, nullptr, false);
    if (const int code = auth_failure(o, response->status, body); code != 0) {
        exit_code = code;
        return std::nullopt;
    }
    if (response->status != 200) {
        std::string message = body.is_object() && body.contains("error")
                                  ? text_of(body["error"].value("message", Json()))
                                  : response->body;
        std::cerr << "runbookctl: runbookd answered " << response->status << ": " << message
                  << "\n";
        exit_code = kExitFailure;
        return std::nullopt;
    }
    if (body.is_discarded()) {
        std::cerr << "runbookctl: runbookd answered with invalid JSON\n";
        exit_code = kExitFailure;
        return std::nullopt;
    }
    return body;
}

int lint(const std::string& dir, runbookd::python::PythonCheckOptions python, bool check_python) {
    auto result = runbookd::load_runbook_dir(dir, runbookd::builtin_step_parsers());
    auto errors = result.errors;
    if (check_python) {
        python.runbooks_dir = dir;
        auto problems = runbookd::python::check_python_steps(result.runbooks, python);
        if (!problems) {
            std::cerr << "runbookctl: python steps not checked: " << problems.error().describe()
                      << " (--no-python skips the check)\n";
            return kExitFailure;
        }
        errors.insert(errors.end(), problems->begin(), problems->end());
    }
    // In file and line order, so that a reader can go through them top to bottom.
    runbookd::sort_by_location(errors);
    for (const auto& e : errors) {
        std::cout << e.to_string() << "\n";
    }
    for (const auto& w : result.warnings) {
        std::cout << w.location.to_string() << ": warning: " << w.message << "\n";
    }
    if (!errors.empty()) {
        std::cerr << fmt::format("runbookctl: {} error{} in {}\n", errors.size(),
                                 errors.size() == 1 ? "" : "s", dir);
        return kExitFailure;
    }
    std::cerr << fmt::format("runbookctl: {} runbook{} OK in {}\n", result.runbooks.size(),
                             result.runbooks.size() == 1 ? "" : "s", dir);
    return 0;
}

int runs_list(const Options& o, const std::string& state, const std::string& runbook, int limit) {
    std::string query = fmt::format("?limit={}", limit);
    if (!state.empty()) {
        query += "&state=" + state;
    }
    if (!runbook.empty()) {
        query += "&runbook=" + runbook;
    }
    int code = 0;
    auto body = get_json(o, "/api/v1/runs" + query, code);
    if (!body) {
        return code;
    }
    if (o.output == "json") {
        std::cout << body->dump(2) << "\n";
        return 0;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : (*body)["runs"]) {
        const std::string duration = r.contains("duration_ms")
                                         ? fmt::format("{}ms", r["duration_ms"].get<std::int64_t>())
                                         : "-";
        rows.push_back({text_of(r["id"]), text_of(r["state"]), text_of(r["runbook"]),
                        text_of(r["alertname"]), text_of(r["fingerprint"]),
                        text_of(r["created_at"]), duration, text_of(r["reason"])});
    }
    print_table({"ID", "STATE", "RUNBOOK", "ALERT", "FINGERPRINT", "CREATED", "DURATION", "REASON"},
                rows);
    return 0;
}

std::string names_or_dash(const Json& names);

void print_output(const char* name, const Json& a) {
    const std::string text = a.value(name, std::string());
    const auto bytes = a.value(std::string(name) + "_bytes", std::int64_t{0});
    if (text.empty()) {
        return;
    }
    std::cout << fmt::format("    {} ({} bytes):\n", name, bytes);
    std::size_t pos = 0;
    while (pos < text.size()) {
        const auto end = std::min(text.find('\n', pos), text.size());
        // Escaped like every other value: a step's output must not drive the terminal.
        std::cout << "      | " << text_of(Json(text.substr(pos, end - pos))) << "\n";
        pos = end + 1;
    }
}

std::string quoted_argv(const Json& argv) {
    std::string out;
    for (const auto& arg : argv) {
        out += (out.empty() ? "" : " ") + Json(arg).dump();
    }
    return out;
}

// Each step as it would run (a dry run's plan, or POST /api/v1/plan).
void print_plan_steps(const Json& steps) {
    for (const auto& p : steps) {
        std::cout << fmt::format("  - {} ({}, timeout {}, retries {})\n", text_of(p["name"]),
                                 text_of(p["kind"]), text_of(p.value("timeout", Json())),
                                 text_of(p.value("retries", Json())));
        if (const Json gate = p.value("approval", Json()); gate.is_object()) {
            std::string approvers;
            for (const auto& a : gate.value("approvers", Json::array())) {
                approvers += (approvers.empty() ? "" : ", ") + text_of(a);
            }
            std::cout << fmt::format("    approval: waits for {} (timeout {}, then {})\n",
                                     approvers.empty() ? "anyone allowed to approve" : approvers,
                                     text_of(gate["timeout"]), text_of(gate["on_timeout"]));
        }
        if (p.contains("error")) {
            std::cout << "    error: " << text_of(p["error"]) << "\n";
            continue;
        }
        std::cout << "    argv: " << quoted_argv(p.value("argv", Json::array())) << "\n";
        std::cout << "    cwd:  " << text_of(p.value("cwd", Json())) << "\n";
        const Json env = p.value("env", Json::object());
        for (const auto& [k, v] : env.items()) {
            std::cout << "    env:  " << text_of(Json(k)) << "=" << text_of(v) << "\n";
        }
        if (const Json py = p.value("python", Json()); py.is_object()) {
            std::cout << "    python: " << text_of(Json(py.dump())) << "\n";
        }
    }
}

void print_plan(const Json& plan) {
    std::cout << "  plan (dry run, nothing executed):\n";
    print_plan_steps(plan.value("steps", Json::array()));
}

void print_run(const Json& r) {
    std::cout << fmt::format("run {}  {}  runbook {}\n", text_of(r["id"]), text_of(r["state"]),
                             text_of(r["runbook"]));
    if (!text_of(r["reason"]).empty()) {
        std::cout << "  reason:   " << text_of(r["reason"]) << "\n";
    }
    std::cout << "  trigger:  " << text_of(r["trigger"]) << " by " << text_of(r["actor"])
              << (r.value("dry_run", false) ? " (dry run)" : "") << "\n";
    if (!r.value("request_reason", std::string()).empty()) {
        std::cout << "  why:      " << text_of(r["request_reason"]) << "\n";
    }
    for (const char* set : {"labels", "params"}) {
        const Json values = r.value(set, Json());
        if (!values.is_object()) {
            continue;
        }
        for (const auto& [k, v] : values.items()) {
            std::cout << fmt::format("  {:<9} {}={}\n", std::string(set) + ":", text_of(Json(k)),
                                     text_of(v));
        }
    }
    if (!r.value("cancelled_by", Json()).is_null()) {
        std::cout << "  cancelled by: " << text_of(r["cancelled_by"]) << "\n";
    }
    std::cout << "  created:  " << text_of(r["created_at"]) << "\n";
    std::cout << "  started:  " << text_of(r["started_at"]) << "\n";
    std::cout << "  finished: " << text_of(r["finished_at"]) << "\n";
    if (r["alert"].is_object()) {
        const Json& a = r["alert"];
        std::cout << "  alert:    " << text_of(a["fingerprint"]) << " " << text_of(a["status"])
                  << " since " << text_of(a["starts_at"]) << "\n";
        for (const auto& [k, v] : a["labels"].items()) {
            std::cout << "            " << text_of(Json(k)) << "=" << text_of(v) << "\n";
        }
    }
    for (const auto& a : r.value("approvals", Json::array())) {
        std::cout << fmt::format("  approval of step {}: {}", text_of(a["step"]),
                                 text_of(a["state"]));
        if (!a["decided_by"].is_null()) {
            std::cout << fmt::format(" by {} at {}", text_of(a["decided_by"]),
                                     text_of(a["decided_at"]));
        }
        std::cout << "\n";
        std::cout << fmt::format("    approvers: {}; deadline {} (on_timeout: {})\n",
                                 names_or_dash(a["approvers"]), text_of(a["deadline"]),
                                 text_of(a["on_timeout"]));
        if (!a.value("message", std::string()).empty()) {
            std::cout << "    message: " << text_of(a["message"]) << "\n";
        }
        if (!a["comment"].is_null()) {
            std::cout << "    comment: " << text_of(a["comment"]) << "\n";
        }
    }
    std::cout << "  steps:\n";
    for (const auto& a : r["attempts"]) {
        std::string how = text_of(a["state"]);
        if (!a.value("exit_code", Json()).is_null()) {
            how += fmt::format(", exit code {}", text_of(a["exit_code"]));
        }
        if (!a.value("signal", Json()).is_null()) {
            how += fmt::format(", signal {}", text_of(a["signal"]));
        }
        if (a.contains("duration_ms")) {
            how += fmt::format(", {}ms", text_of(a["duration_ms"]));
        }
        std::cout << fmt::format("  - {} (attempt {}): {}\n", text_of(a["step"]),
                                 text_of(a["attempt"]), how);
        std::cout << "    argv: " << quoted_argv(a["argv"]) << "\n";
        if (!a.value("error", std::string()).empty()) {
            std::cout << "    error: " << text_of(a["error"]) << "\n";
        }
        if (const Json outputs = a.value("outputs", Json()); outputs.is_object()) {
            for (const auto& [key, value] : outputs.items()) {
                std::cout << "    output " << text_of(Json(key)) << " = " << text_of(value) << "\n";
            }
        }
        print_output("stdout", a);
        print_output("stderr", a);
        if (a.contains("output_file")) {
            const Json& f = a["output_file"];
            std::cout << "    output file: " << text_of(f["path"]) << " ("
                      << text_of(f["stored_bytes"]) << " bytes"
                      << (f.value("truncated", false) ? ", truncated at the cap" : "") << ")\n";
        }
    }
    if (r.contains("plan") && r["plan"].is_object()) {
        print_plan(r["plan"]);
    }
}

int runs_show(const Options& o, const std::string& id) {
    int code = 0;
    auto body = get_json(o, "/api/v1/runs/" + id, code);
    if (!body) {
        return code;
    }
    if (o.output == "json") {
        std::cout << body->dump(2) << "\n";
        return 0;
    }
    print_run(*body);
    return 0;
}

struct RunRequest {
    std::string runbook;
    std::vector<std::string> labels, params;
    std::string reason, actor, idempotency_key;
    bool dry_run = false;
    bool wait = false;
    bool follow = false;
};

// "k=v" arguments of `flag` as a JSON object; nullopt (after saying why) when one has no '='.
std::optional<Json> parse_pairs(const std::vector<std::string>& pairs, const char* flag) {
    Json out = Json::object();
    for (const auto& pair : pairs) {
        const auto eq = pair.find('=');
        if (eq == std::string::npos || eq == 0) {
            std::cerr << "runbookctl: " << flag << " \"" << text_of(Json(pair))
                      << "\" is not NAME=VALUE\n";
            return std::nullopt;
        }
        out[pair.substr(0, eq)] = pair.substr(eq + 1);
    }
    return out;
}

// An error answer: its message and the field at fault.
void print_api_error(unsigned status, const Json& body, const std::string& raw) {
    const Json error = body.is_object() ? body.value("error", Json::object()) : Json::object();
    std::cerr << "runbookctl: runbookd answered " << status << ": "
              << (error.contains("message") ? text_of(error["message"]) : raw);
    if (error.contains("field")) {
        std::cerr << " (field " << text_of(error["field"]) << ")";
    }
    std::cerr << "\n";
}

int exit_code_of(const std::string& state) {
    if (state == "succeeded") {
        return 0;
    }
    if (state == "cancelled") {
        return kExitRunCancelled;
    }
    return state == "interrupted" ? kExitRunInterrupted : kExitRunFailed;
}

bool has_ended(const Json& run) {
    const auto state = runbookd::parse_run_state(run.value("state", std::string()));
    return state && runbookd::is_terminal(*state);
}

int runs_follow(const Options& o, const std::string& id);

// POST /api/v1/runbooks/NAME/runs, then (with --wait) polls the run until it ends.
int run_runbook(const Options& o, const RunRequest& r) {
    const auto labels = parse_pairs(r.labels, "--label");
    const auto params = parse_pairs(r.params, "--param");
    if (!labels || !params) {
        return kExitUsage;
    }
    Json body = {{"labels", *labels}, {"params", *params}, {"dry_run", r.dry_run}};
    if (!r.reason.empty()) {
        body["reason"] = r.reason;
    }
    // With a token runbookd records whose it is, and refuses an actor named in the body.
    if (!r.actor.empty() && o.token.empty()) {
        body["actor"] = r.actor;
    }
    Headers headers = with_token(o, {{"Content-Type", "application/json"}});
    if (!r.idempotency_key.empty()) {
        headers.emplace_back("Idempotency-Key", r.idempotency_key);
    }
    auto response =
        runbookd::http::send_request("POST", o.url + "/api/v1/runbooks/" + r.runbook + "/runs",
                                     body.dump(), headers, std::chrono::seconds(10), o.tls);
    if (!response) {
        std::cerr << "runbookctl: cannot reach runbookd at " << o.url << ": "
                  << response.error().message << "\n";
        return kExitUnreachable;
    }
    Json run = Json::parse(response->body, nullptr, false);
    if (const int code = auth_failure(o, response->status, run); code != 0) {
        return code;
    }
    if (response->status != 200 && response->status != 201) {
        print_api_error(response->status, run, response->body);
        return kExitFailure;
    }
    if (!run.is_object()) {
        std::cerr << "runbookctl: runbookd answered with invalid JSON\n";
        return kExitFailure;
    }
    for (const auto& w : run.value("warnings", Json::array())) {
        std::cerr << "runbookctl: warning: " << text_of(w) << "\n";
    }
    if (response->status == 200) {
        std::cerr << "runbookctl: the Idempotency-Key was used before for this request: run "
                  << text_of(run["id"]) << " (no new run)\n";
    }
    const std::string id = text_of(run["id"]);
    if (r.wait && !has_ended(run) && o.output != "json") {
        std::cerr << fmt::format(
            "runbookctl: run {} started; waiting for it to end (runbookctl "
            "runs follow {} shows it as it goes)\n",
            id, id);
    }
    if (r.follow) {
        if (o.output != "json") {
            std::cout << fmt::format(
                "run {} started by {}; following it (Ctrl-C stops following, "
                "not the run)\n",
                id, text_of(run["actor"]));
        }
        return runs_follow(o, id);
    }
    std::string last_state = run.value("state", std::string());
    while (r.wait && !has_ended(run)) {
        if (const auto state = run.value("state", std::string());
            state != last_state && state == "waiting_approval" && o.output != "json") {
            std::cerr << "runbookctl: run " << id << " waits: " << text_of(run["reason"]) << "\n";
        }
        last_state = run.value("state", std::string());
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        int code = 0;
        auto latest = get_json(o, "/api/v1/runs/" + id, code);
        if (!latest) {
            return code;
        }
        run = std::move(*latest);
    }
    if (o.output == "json") {
        std::cout << run.dump(2) << "\n";
    } else {
        print_run(run);
    }
    if (!has_ended(run)) {
        return 0;  // started; not waited for
    }
    return exit_code_of(run.value("state", std::string()));
}

// POST /api/v1/plan with the notification in `file`, or with `labels` and `status`.
int plan(const Options& o, const std::string& file, const std::vector<std::string>& labels,
         const std::string& status) {
    if (file.empty() == labels.empty()) {
        std::cerr << "runbookctl: plan takes a notification file or --label NAME=VALUE, not "
                     "both\n";
        return kExitUsage;
    }
    std::string body;
    if (!file.empty()) {
        std::ifstream in(file);
        std::stringstream text;
        text << in.rdbuf();
        if (!in) {
            std::cerr << "runbookctl: cannot read " << file << "\n";
            return kExitUsage;
        }
        body = text.str();
    } else {
        const auto pairs = parse_pairs(labels, "--label");
        if (!pairs) {
            return kExitUsage;
        }
        body = Json{{"labels", *pairs}, {"status", status}}.dump();
    }
    auto response = api_request(o, "POST", "/api/v1/plan", std::chrono::seconds(10), body);
    if (!response) {
        std::cerr << "runbookctl: cannot reach runbookd at " << o.url << ": "
                  << response.error().message << "\n";
        return kExitUnreachable;
    }
    const Json answer = Json::parse(response->body, nullptr, false);
    if (const int code = auth_failure(o, response->status, answer); code != 0) {
        return code;
    }
    if (response->status != 200 || !answer.is_object()) {
        print_api_error(response->status, answer, response->body);
        return kExitFailure;
    }
    if (o.output == "json") {
        std::cout << answer.dump(2) << "\n";
        return 0;
    }
    for (const auto& a : answer.value("alerts", Json::array())) {
        std::string labels_text;
        for (const auto& [k, v] : a["labels"].items()) {
            labels_text += (labels_text.empty() ? "" : " ") + text_of(Json(k)) + "=" + text_of(v);
        }
        std::cout << fmt::format("alert {} {}  {}\n  outcome: {}", text_of(a["fingerprint"]),
                                 text_of(a["status"]), labels_text, text_of(a["outcome"]));
        std::string detail = a.value("detail", std::string());
        // The detail may repeat the outcome's name ("duplicate: this episode ...").
        if (const std::string prefix = a.value("outcome", std::string()) + ": ";
            detail.rfind(prefix, 0) == 0) {
            detail.erase(0, prefix.size());
        }
        std::cout << (detail.empty() ? "" : ": " + text_of(Json(detail))) << "\n";
        for (const auto& r : a.value("runbooks", Json::array())) {
            std::cout << fmt::format("  runbook {}: {}", text_of(r["runbook"]),
                                     text_of(r["outcome"]));
            if (!r.value("detail", std::string()).empty()) {
                std::cout << " (" << text_of(r["detail"]) << ")";
            }
            if (!r["waits"].is_null()) {
                std::cout << "; would wait: " << text_of(r["waits"]);
            }
            std::cout << "\n";
            print_plan_steps(r.value("steps", Json::array()));
        }
    }
    for (const auto& w : answer.value("warnings", Json::array())) {
        std::cerr << "runbookctl: warning: " << text_of(w) << "\n";
    }
    return 0;
}

// A step's output for a terminal: newlines and tabs kept, every other control character shown
// escaped, so that a program's output cannot move the cursor or forge runbookctl's own lines.
std::string printable_output(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '\n' || c == '\t' || (u >= 0x20 && u != 0x7f)) {
            out += c;
        } else {
            out += fmt::format("\\x{:02x}", u);
        }
    }
    return out;
}

// Prints runbookd's error answer (its message, else the whole body); returns the exit code.
int report_error(const Options& o, const runbookd::http::ClientResponse& response) {
    const Json body = Json::parse(response.body, nullptr, false);
    if (const int code = auth_failure(o, response.status, body); code != 0) {
        return code;
    }
    print_api_error(response.status, body, response.body);
    return kExitFailure;
}

// One server-sent event of GET /api/v1/runs/{id}/follow, printed for people.
void print_follow_event(const std::string& name, const Json& d) {
    if (name == "run") {
        const auto reason = d.value("reason", std::string());
        // A waiting run's reason says what it waits for (a lock, an approval and who may give it).
        std::cout << fmt::format("run {} ({}): {}{}{}\n", text_of(d["id"]), text_of(d["runbook"]),
                                 text_of(d["state"]), reason.empty() ? "" : ": ",
                                 text_of(Json(reason)));
    } else if (name == "attempt" && d.value("state", "") == "running") {
        std::string argv;
        for (const auto& arg : d.value("argv", Json::array())) {
            argv += " " + text_of(arg);
        }
        std::cout << fmt::format("== step {} (attempt {}){}{}\n", text_of(d["step"]),
                                 text_of(d["attempt"]), argv.empty() ? "" : ":", argv);
    } else if (name == "attempt") {
        for (const char* stream : {"stdout", "stderr"}) {
            if (const auto text = d.value(stream, std::string()); !text.empty()) {
                std::cout << printable_output(text) << (text.back() == '\n' ? "" : "\n");
            }
        }
        std::string how = text_of(d["state"]);
        if (!d.value("exit_code", Json()).is_null()) {
            how += ", exit code " + text_of(d["exit_code"]);
        }
        if (!d.value("signal", Json()).is_null()) {
            how += ", signal " + text_of(d["signal"]);
        }
        std::cout << fmt::format("== step {} {} ({} ms){}{}\n", text_of(d["step"]), how,
                                 text_of(d["duration_ms"]),
                                 d.value("error", std::string()).empty() ? "" : ": ",
                                 text_of(d.value("error", Json(""))));
    } else if (name == "output") {
        std::cout << printable_output(d.value("text", std::string()));
    } else if (name == "end") {
        const auto reason = d.value("reason", std::string());
        std::cout << fmt::format("run {} {}{}{}\n", text_of(d["id"]), text_of(d["state"]),
                                 reason.empty() ? "" : ": ", text_of(Json(reason)));
    } else if (name == "error") {
        std::cerr << "runbookctl: " << text_of(d.value("message", Json(""))) << "\n";
    }
    std::cout.flush();
}

// GET /api/v1/runs/{id}/follow: prints the run's steps and output as they happen, until it
// ends. The exit status says how it ended, as for `run --wait`; 1 when the stream broke first.
int runs_follow(const Options& o, const std::string& id) {
    std::string pending;
    std::string final_state;
    const auto on_body = [&](std::string_view piece) {
        pending.append(piece);
        for (auto end = pending.find("\n\n"); end != std::string::npos;
             end = pending.find("\n\n")) {
            const std::string event = pending.substr(0, end);
            pending.erase(0, end + 2);
            std::string name, data;
            std::size_t at = 0;
            while (at < event.size()) {
                auto eol = event.find('\n', at);
                if (eol == std::string::npos) {
                    eol = event.size();
                }
                const std::string_view line(event.data() + at, eol - at);
                if (line.rfind("event: ", 0) == 0) {
                    name = line.substr(7);
                } else if (line.rfind("data: ", 0) == 0) {
                    data = line.substr(6);
                }
                at = eol + 1;
            }
            if (name.empty()) {
                continue;  // a keep-alive comment
            }
            const Json d = Json::parse(data, nullptr, false);
            if (name == "end") {
                final_state = d.value("state", "");
            }
            if (o.output == "json") {
                std::cout << Json{{"event", name}, {"data", d}}.dump() << "\n" << std::flush;
            } else {
                print_follow_event(name, d);
            }
        }
        return true;
    };
    auto response = runbookd::http::stream_request("GET", o.url + "/api/v1/runs/" + id + "/follow",
                                                   with_token(o, {{"Accept", "text/event-stream"}}),
                                                   on_body, std::chrono::seconds(60), o.tls);
    if (!response) {
        std::cerr << "runbookctl: cannot reach runbookd at " << o.url << ": "
                  << response.error().message << "\n";
        return kExitUnreachable;
    }
    if (response->status != 200) {
        return report_error(o, *response);
    }
    if (final_state.empty()) {
        std::cerr << "runbookctl: the stream ended before run " << id
                  << " did (runbookd stopping?); runbookctl runs follow " << id
                  << " picks it up again\n";
        return kExitFailure;
    }
    return exit_code_of(final_state);
}

// POST /api/v1/runs/{id}/cancel.
int runs_cancel(const Options& o, const std::string& id, const std::string& actor,
                const std::string& reason) {
    // With a token runbookd records whose it is, and refuses an actor named in the body.
    Json body = o.token.empty() ? Json{{"actor", actor}} : Json::object();
    if (!reason.empty()) {
        body["reason"] = reason;
    }
    auto response = api_request(o, "POST", "/api/v1/runs/" + id + "/cancel",
                                std::chrono::seconds(10), body.dump());
    if (!response) {
        std::cerr << "runbookctl: cannot reach runbookd at " << o.url << ": "
                  << response.error().message << "\n";
        return kExitUnreachable;
    }
    const Json answer = Json::parse(response->body, nullptr, false);
    if (o.output == "json") {
        std::cout << response->body << "\n";
    }
    if (response->status == 200 || response->status == 202) {
        if (o.output != "json") {
            const std::string was = answer.value("state", std::string());
            std::cout << (was == "waiting_approval"
                              ? fmt::format("run {} cancelled while it waited for approval; the "
                                            "gated step never ran\n",
                                            id)
                          : answer.value("stopping", false)
                              ? fmt::format("run {} is stopping: its step got its stop signal\n",
                                            id)
                              : fmt::format("run {} cancelled before it started\n", id));
        }
        return 0;
    }
    return report_error(o, *response);
}

std::string names_or_dash(const Json& names) {
    std::string out;
    for (const auto& n : names) {
        out += (out.empty() ? "" : ", ") + text_of(n);
    }
    return out.empty() ? "-" : out;
}

// POST /api/v1/reload: 0 when runbookd took the new runbooks, 1 (with each error, one
// "file:line:column: message" a line) when it kept the old ones.
int reload(const Options& o) {
    // The module check of a large directory may take a while; the server serialises reloads.
    auto response = api_request(o, "POST", "/api/v1/reload", std::chrono::seconds(120));
    if (!response) {
        std::cerr << "runbookctl: cannot reach runbookd at " << o.url << ": "
                  << response.error().message << "\n";
        return kExitUnreachable;
    }
    Json body = Json::parse(response->body, nullptr, false);
    if (const int code = auth_failure(o, response->status, body); code != 0) {
        return code;
    }
    if (o.output == "json") {
        std::cout << response->body;
    }
    if (response->status == 200 && body.is_object()) {
        if (o.output != "json") {
            std::cout << fmt::format("reloaded: {} runbooks\nadded: {}\nremoved: {}\nchanged: {}\n",
                                     text_of(body.value("runbooks", Json())),
                                     names_or_dash(body.value("added", Json::array())),
                                     names_or_dash(body.value("removed", Json::array())),
                                     names_or_dash(body.value("changed", Json::array())));
        }
        return 0;
    }
    const Json error = body.is_object() ? body.value("error", Json::object()) : Json::object();
    std::cerr << "runbookctl: runbookd answered " << response->status << ": "
              << (error.contains("message") ? text_of(error["message"]) : response->body) << "\n";
    for (const auto& e : error.value("errors", Json::array())) {
        std::cerr << text_of(e) << "\n";
    }
    return kExitFailure;
}

// approve/deny RUN STEP: POST .../steps/STEP/approve or deny; exit 0 only when this answer was
// the one recorded.
int answer(const Options& o, const std::string& run, const std::string& step, bool approve,
           const std::string& actor, const std::string& comment) {
    // With a token runbookd records whose it is, and refuses an actor named in the body.
    Json body = o.token.empty() ? Json{{"actor", actor}} : Json::object();
    if (!comment.empty()) {
        body["comment"] = comment;
    }
    const std::string path =
        fmt::format("/api/v1/runs/{}/steps/{}/{}", run, step, approve ? "approve" : "deny");
    auto response = api_request(o, "POST", path, std::chrono::seconds(10), body.dump());
    if (!response) {
        std::cerr << "runbookctl: cannot reach runbookd at " << o.url << ": "
                  << response.error().message << "\n";
        return kExitUnreachable;
    }
    const Json reply = Json::parse(response->body, nullptr, false);
    if (const int code = auth_failure(o, response->status, reply); code != 0) {
        return code;
    }
    if (o.output == "json") {
        std::cout << response->body << "\n";
    }
    if (response->status == 200 && reply.is_object()) {
        if (o.output != "json") {
            // With a token runbookd recorded the token's principal, not --actor.
            std::cout << fmt::format("run {}: step {} {}{}\n", run, step,
                                     approve ? "approved" : "denied",
                                     o.token.empty() ? " by " + text_of(Json(actor)) : "");
        }
        return 0;
    }
    const Json error = reply.is_object() ? reply.value("error", Json::object()) : Json::object();
    std::cerr << "runbookctl: runbookd answered " << response->status << ": "
              << (error.contains("message") ? text_of(error["message"]) : response->body) << "\n";
    return kExitFailure;
}

int runbooks_list(const Options& o) {
    int code = 0;
    auto body = get_json(o, "/api/v1/runbooks", code);
    if (!body) {
        return code;
    }
    if (o.output == "json") {
        std::cout << body->dump(2) << "\n";
        return 0;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : (*body)["runbooks"]) {
        std::string matchers;
        for (const auto& m : r["matchers"]) {
            matchers += (matchers.empty() ? "" : ", ") + m.get<std::string>();
        }
        // host* is required; mode=graceful has a default.
        std::string params;
        for (const auto& p : r.value("params", Json::array())) {
            std::string one = text_of(p["name"]);
            if (p.value("required", false)) {
                one += "*";
            }
            if (p.contains("default") && !p["default"].is_null()) {
                one += "=" + text_of(p["default"]);
            }
            params += (params.empty() ? "" : ", ") + one;
        }
        rows.push_back({text_of(r["name"]), std::to_string(r["steps"].size()),
                        matchers.empty() ? "(manual only)" : matchers,
                        params.empty() ? "-" : params, text_of(r["source_file"])});
    }
    print_table({"NAME", "STEPS", "MATCHERS", "PARAMS", "FILE"}, rows);
    return 0;
}

Json anchor_json(const std::optional<runbookd::audit::Anchor>& anchor) {
    if (!anchor) {
        return nullptr;
    }
    return {{"last_event_id", anchor->last_event_id},
            {"last_hash", anchor->last_hash},
            {"pruned_at", anchor->pruned_at},
            {"pruned_by", anchor->pruned_by},
            {"deleted_events", anchor->deleted_events}};
}

// Opens the database file itself (not through runbookd); it may be in use by runbookd (WAL).
std::optional<runbookd::sqlite::Database> open_db(const std::string& path, bool read_only) {
    if (!std::filesystem::exists(path)) {
        std::cerr << "runbookctl: database " << path << " does not exist\n";
        return std::nullopt;
    }
    auto db = runbookd::sqlite::Database::open(path, read_only, 5000);
    if (!db) {
        std::cerr << "runbookctl: " << db.error().message << "\n";
        return std::nullopt;
    }
    return std::move(*db);
}

int audit_verify(const Options& o, const std::string& path) {
    auto db = open_db(path, true);
    if (!db) {
        return kExitFailure;
    }
    auto report = runbookd::audit::verify(*db);
    if (!report) {
        std::cerr << "runbookctl: audit verify of " << path << " failed: " << report.error().message
                  << "\n";
        return kExitFailure;
    }
    const auto& r = *report;
    if (o.output == "json") {
        Json out = {{"intact", r.intact()},     {"events", r.events},
                    {"first_id", r.first_id},   {"last_id", r.last_id},
                    {"head_hash", r.head_hash}, {"anchor", anchor_json(r.anchor)}};
        if (!r.intact()) {
            out["problem"] = r.problem;
            out["event_id"] = r.event_id;
            out["message"] = r.message;
        }
        std::cout << out.dump(2) << "\n";
    } else if (r.intact()) {
        std::cout << fmt::format("audit chain intact: {} events", r.events);
        if (r.events > 0) {
            std::cout << fmt::format(" (ids {} to {})", r.first_id, r.last_id);
        }
        std::cout << fmt::format(", head {}\n", r.head_hash);
        if (r.anchor) {
            std::cout << fmt::format("pruned through event {} on {} by {}\n",
                                     r.anchor->last_event_id, r.anchor->pruned_at,
                                     text_of(Json(r.anchor->pruned_by)));
        }
    }
    if (!r.intact()) {
        std::cerr << fmt::format("runbookctl: audit chain broken at event {} ({}): {}\n",
                                 r.event_id, r.problem, r.message);
        return kExitFailure;
    }
    return 0;
}

// "2026-01-31" (midnight UTC) or an RFC 3339 time.
std::optional<runbookd::Timestamp> parse_date(const std::string& text) {
    const bool date_only = text.size() == 10 && text[4] == '-' && text[7] == '-';
    auto parsed = runbookd::parse_rfc3339(date_only ? text + "T00:00:00Z" : text);
    if (!parsed) {
        return std::nullopt;
    }
    return *parsed;
}

int audit_prune(const Options& o, const std::string& path, const std::string& before,
                const std::string& actor) {
    const auto when = parse_date(before);
    if (!when) {
        std::cerr << "runbookctl: --before \"" << text_of(Json(before))
                  << "\" is not a date (write YYYY-MM-DD or an RFC 3339 time such as "
                     "2026-01-31T12:00:00Z)\n";
        return kExitUsage;
    }
    auto db = open_db(path, false);
    if (!db) {
        return kExitFailure;
    }
    auto report = runbookd::audit::prune(*db, *when, actor);
    if (!report) {
        std::cerr << "runbookctl: audit prune of " << path << " failed: " << report.error().message
                  << "\n";
        return kExitFailure;
    }
    if (o.output == "json") {
        std::cout << Json{{"deleted_events", report->deleted_events},
                          {"last_event_id", report->last_event_id},
                          {"last_hash", report->last_hash},
                          {"remaining_events", report->remaining_events}}
                         .dump(2)
                  << "\n";
    } else if (report->deleted_events == 0) {
        std::cout << "no events to prune before " << when->to_rfc3339_millis() << "\n";
    } else {
        std::cout << fmt::format("pruned {} events through event {} (hash {}); {} remain\n",
                                 report->deleted_events, report->last_event_id, report->last_hash,
                                 report->remaining_events);
    }
    return 0;
}

struct TokenRequest {
    std::string name;
    std::vector<std::string> scopes;
    std::vector<std::string> runbooks;
    std::string username;
};

// A YAML list in flow style, each item double-quoted (JSON strings are valid YAML).
std::string flow_list(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& item : items) {
        out += (out.empty() ? "" : ", ") + Json(item).dump();
    }
    return "[" + out + "]";
}

// Prints a new secret once, and the tokens file entry holding its hash.
int token_create(const Options& o, const TokenRequest& t) {
    if (!runbookd::auth::valid_principal_name(t.name)) {
        std::cerr << "runbookctl: --name \"" << text_of(Json(t.name))
                  << "\" is not a valid name (1 to 100 letters, digits, _, -, . and @)\n";
        return kExitUsage;
    }
    if (!t.username.empty() && t.username.find(':') != std::string::npos) {
        std::cerr << "runbookctl: --username may not hold ':'\n";
        return kExitUsage;
    }
    const std::string secret = runbookd::auth::generate_secret();
    if (secret.empty()) {
        std::cerr << "runbookctl: no random bytes available for a secret\n";
        return kExitFailure;
    }
    const std::string hash = runbookd::auth::secret_hash_hex(secret);
    std::string entry = fmt::format("  - name: {}\n", t.name);
    if (!t.username.empty()) {
        entry += fmt::format("    username: {}\n", Json(t.username).dump());
    }
    entry += fmt::format("    sha256: {}\n    scopes: {}\n", hash, flow_list(t.scopes));
    if (!t.runbooks.empty()) {
        entry += fmt::format("    runbooks: {}\n", flow_list(t.runbooks));
    }
    if (o.output == "json") {
        std::cout << Json{{"name", t.name}, {"secret", secret}, {"sha256", hash}, {"entry", entry}}
                         .dump(2)
                  << "\n";
        return 0;
    }
    std::cout << "secret: " << secret << "\n\n"
              << "# Add under principals: in the tokens file, then reload runbookd:\n"
              << entry;
    std::cerr << "runbookctl: store the secret now; runbookd keeps only its hash and it cannot "
                 "be shown again\n";
    return 0;
}

std::string default_actor() {
    const char* user = std::getenv("USER");
    return user != nullptr && *user != '\0' ? user : "runbookctl";
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    runbookd::ctl::ConnectionFlags connection;

    CLI::App app{"runbookctl: inspect and lint runbookd"};
    app.set_version_flag("--version", std::string("runbookctl ") + RUNBOOKD_VERSION);
    app.add_option("--url", connection.url,
                   "runbookd base URL (env RUNBOOKD_URL, config url; default "
                   "http://127.0.0.1:9095)");
    app.add_option("--token", connection.token,
                   "secret sent as a bearer token (env RUNBOOKD_TOKEN, config token)");
    app.add_option("--ca-file", connection.ca_file,
                   "PEM CA certificates to trust for https:// URLs (env RUNBOOKD_CA_FILE, config "
                   "ca_file; default: the system's)");
    app.add_option("--cert-file", connection.cert_file,
                   "PEM client certificate, for a runbookd that asks for one (env "
                   "RUNBOOKD_CERT_FILE, config cert_file)");
    app.add_option("--key-file", connection.key_file,
                   "PEM key of --cert-file (env RUNBOOKD_KEY_FILE, config key_file)");
    app.add_option(
        "--config", connection.config,
        "config file with url and token (default " + runbookd::ctl::default_config_path() + ")");
    app.add_option("-o,--output", o.output, "table or json")
        ->check(CLI::IsMember({"table", "json"}))
        ->capture_default_str();
    app.require_subcommand(1);

    std::string lint_dir;
    runbookd::python::PythonCheckOptions python;
    bool no_python = false;
    auto* lint_cmd = app.add_subcommand("lint", "check a runbooks directory without a server");
    lint_cmd->add_option("dir", lint_dir, "directory of runbook files")->required();
    lint_cmd->add_option("--python-path", python.path,
                         "a directory of python.path (repeat for each)");
    lint_cmd->add_option("--python-worker", python.worker,
                         "runbookd-python-worker to import modules with (default: next to "
                         "runbookctl)");
    lint_cmd->add_flag("--no-python", no_python, "do not import the modules of python steps");

    auto* runs_cmd = app.add_subcommand("runs", "runs: list, show, follow, cancel");
    runs_cmd->require_subcommand(1);
    std::string state, runbook, run_id;
    int limit = 50;
    auto* list_cmd = runs_cmd->add_subcommand("list", "list recent runs, newest first");
    list_cmd->add_option("--state", state,
                         "queued, running, waiting_approval, succeeded, failed, cancelled or "
                         "interrupted");
    list_cmd->add_option("--runbook", runbook, "only runs of this runbook");
    list_cmd->add_option("--limit", limit, "at most this many runs")->capture_default_str();
    auto* show_cmd = runs_cmd->add_subcommand("show", "show a run with its steps and output");
    show_cmd->add_option("id", run_id, "run id")->required();
    auto* follow_cmd = runs_cmd->add_subcommand(
        "follow", "print a run's steps and output as they happen, until it ends");
    follow_cmd->add_option("id", run_id, "run id")->required();
    std::string cancel_reason, cancel_actor = default_actor();
    auto* cancel_cmd = runs_cmd->add_subcommand("cancel", "cancel a queued or running run");
    cancel_cmd->add_option("id", run_id, "run id")->required();
    cancel_cmd->add_option("--reason", cancel_reason, "why, recorded with the cancel");
    cancel_cmd
        ->add_option("--actor", cancel_actor,
                     "who cancels, recorded ($USER); with a token runbookd records the "
                     "token's principal instead")
        ->capture_default_str();

    std::string answer_run, answer_step, comment;
    std::string answer_actor = default_actor();
    CLI::App* answer_cmds[2] = {
        app.add_subcommand("approve", "approve the step a run is waiting at"),
        app.add_subcommand("deny", "deny the step a run is waiting at (the run ends)")};
    for (auto* cmd : answer_cmds) {
        cmd->add_option("run", answer_run, "run id")->required();
        cmd->add_option("step", answer_step, "step name")->required();
        cmd->add_option("--comment", comment, "why, recorded with the answer");
        cmd->add_option("--actor", answer_actor, "who answers ($USER)")->capture_default_str();
    }

    auto* runbooks_cmd = app.add_subcommand("runbooks", "runbooks: list");
    runbooks_cmd->require_subcommand(1);
    auto* runbooks_list_cmd = runbooks_cmd->add_subcommand("list", "list loaded runbooks");

    RunRequest run_request;
    auto* run_cmd = app.add_subcommand("run", "start a runbook by hand (or a dry run of it)");
    run_cmd->add_option("runbook", run_request.runbook, "runbook name")->required();
    // One value per flag (repeat the flag), so that a positional argument after it stays one.
    run_cmd->add_option("--label", run_request.labels, "a label of the run, NAME=VALUE (repeat)")
        ->allow_extra_args(false);
    run_cmd->add_option("--param", run_request.params, "a parameter, NAME=VALUE (repeat)")
        ->allow_extra_args(false);
    run_cmd->add_option("--reason", run_request.reason, "why, recorded in the audit trail");
    run_cmd->add_option("--actor", run_request.actor,
                        "who runs it, recorded with the run (default: the caller's address)");
    run_cmd->add_option("--idempotency-key", run_request.idempotency_key,
                        "the same key and request start one run, however often sent");
    run_cmd->add_flag("--dry-run", run_request.dry_run,
                      "render every step and record the plan; run nothing");
    run_cmd->add_flag("--wait", run_request.wait,
                      "wait until the run ends; the exit code says how it ended");
    run_cmd->add_flag("--follow", run_request.follow,
                      "print the run's steps and output as they happen until it ends (as runs "
                      "follow); the exit code says how it ended");

    std::string plan_file, plan_status = "firing";
    std::vector<std::string> plan_labels;
    auto* plan_cmd = app.add_subcommand(
        "plan", "what a notification (or one alert's labels) would start; nothing is recorded");
    plan_cmd->add_option("payload", plan_file, "an Alertmanager notification (JSON file)");
    plan_cmd->add_option("--label", plan_labels, "a label of the alert, NAME=VALUE (repeat)")
        ->allow_extra_args(false);
    plan_cmd->add_option("--status", plan_status, "firing or resolved (with --label)")
        ->check(CLI::IsMember({"firing", "resolved"}))
        ->capture_default_str();

    auto* reload_cmd = app.add_subcommand(
        "reload", "make runbookd reload its runbooks directory (kept as is on any error)");

    auto* token_cmd = app.add_subcommand("token", "tokens for the tokens file: create");
    token_cmd->require_subcommand(1);
    TokenRequest token_request;
    auto* token_create_cmd = token_cmd->add_subcommand(
        "create", "print a new random secret and the tokens file entry with its hash");
    token_create_cmd->add_option("--name", token_request.name, "the principal's name")->required();
    token_create_cmd
        ->add_option("--scope", token_request.scopes,
                     "webhook, read, run, approve or admin (repeat for each)")
        ->required()
        ->check(CLI::IsMember({"webhook", "read", "run", "approve", "admin"}));
    token_create_cmd->add_option("--runbook", token_request.runbooks,
                                 "limit run and approve to this runbook (repeat for each)");
    token_create_cmd->add_option("--username", token_request.username,
                                 "also allow HTTP Basic auth with this user name");

    auto* audit_cmd = app.add_subcommand("audit", "the audit chain in the database: verify, prune");
    audit_cmd->require_subcommand(1);
    std::string db_path, before, actor = default_actor();
    auto* verify_cmd =
        audit_cmd->add_subcommand("verify", "check that no audit event was changed or removed");
    verify_cmd->add_option("--db", db_path, "runbookd's SQLite file")->required();
    auto* prune_cmd = audit_cmd->add_subcommand(
        "prune", "delete events recorded before a date, keeping the chain verifiable");
    prune_cmd->add_option("--db", db_path, "runbookd's SQLite file")->required();
    prune_cmd->add_option("--before", before, "YYYY-MM-DD (UTC) or an RFC 3339 time")->required();
    prune_cmd->add_option("--actor", actor, "who prunes, recorded in the anchor ($USER)")
        ->capture_default_str();

    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return kExitUsage;
    }
    if (token_create_cmd->parsed()) {
        return token_create(o, token_request);
    }
    if (!lint_cmd->parsed() && !verify_cmd->parsed() && !prune_cmd->parsed()) {
        auto resolved = runbookd::ctl::resolve_connection(connection);
        if (!resolved) {
            std::cerr << "runbookctl: " << resolved.error().message << "\n";
            return kExitUsage;
        }
        o.url = resolved->url;
        o.token = resolved->token;
        o.tls = {resolved->ca_file, resolved->cert_file, resolved->key_file};
    }

    if (lint_cmd->parsed()) {
        return lint(lint_dir, python, !no_python);
    }
    if (list_cmd->parsed()) {
        return runs_list(o, state, runbook, limit);
    }
    if (show_cmd->parsed()) {
        return runs_show(o, run_id);
    }
    if (follow_cmd->parsed()) {
        return runs_follow(o, run_id);
    }
    if (cancel_cmd->parsed()) {
        return runs_cancel(o, run_id, cancel_actor, cancel_reason);
    }
    if (answer_cmds[0]->parsed() || answer_cmds[1]->parsed()) {
        return answer(o, answer_run, answer_step, answer_cmds[0]->parsed(), answer_actor, comment);
    }
    if (runbooks_list_cmd->parsed()) {
        return runbooks_list(o);
    }
    if (run_cmd->parsed()) {
        return run_runbook(o, run_request);
    }
    if (plan_cmd->parsed()) {
        return plan(o, plan_file, plan_labels, plan_status);
    }
    if (reload_cmd->parsed()) {
        return reload(o);
    }
    if (verify_cmd->parsed()) {
        return audit_verify(o, db_path);
    }
    if (prune_cmd->parsed()) {
        return audit_prune(o, db_path, before, actor);
    }
    return kExitFailure;
}
