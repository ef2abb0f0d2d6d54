#include "auth/auth.hpp"

#include <map>
#include <set>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "api/routes.hpp"
#include "common/hash.hpp"
#include "support/support.hpp"

// Authentication and authorization over real HTTP against an in-process runbookd with a real
// tokens file and SQLite database (docs/auth.md).

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr const char* kEcho = R"(name: echo
matchers: ['alertname="Echo"']
steps:
  - name: say
    argv: [/bin/echo, hello]
)";

constexpr const char* kOther = R"(name: other
matchers: ['alertname="Echo"']
steps:
  - name: say
    argv: [/bin/echo, other]
)";

// One principal per scope, a limited one and a Basic one; secret = "secret-" + name.
std::string tokens_yaml() {
    std::string out = "principals:\n";
    for (const char* scope : {"webhook", "read", "run", "approve", "admin"}) {
        out += fmt::format("  - name: p-{}\n    sha256: {}\n    scopes: [{}]\n", scope,
                           auth::secret_hash_hex(fmt::format("secret-p-{}", scope)), scope);
    }
    out +=
        fmt::format("  - name: limited\n    sha256: {}\n    scopes: [run]\n    runbooks: [echo]\n",
                    auth::secret_hash_hex("secret-limited"));
    out += fmt::format(
        "  - name: am\n    username: alertmanager\n    sha256: {}\n"
        "    scopes: [webhook]\n",
        auth::secret_hash_hex("secret-am"));
    return out;
}

Headers bearer(const std::string& secret) {
    return {{"Authorization", "Bearer " + secret}};
}

Headers basic(const std::string& user, const std::string& password) {
    return {{"Authorization", "Basic " + base64(user + ":" + password)}};
}

// runbookd with the tokens file above.
struct AuthDaemon {
    explicit AuthDaemon(const test::RunbookFiles& runbooks = {{"echo.yaml", kEcho},
                                                              {"other.yaml", kOther}})
        : tokens(tokens_dir.file("tokens.yaml")) {
        test::write_file(tokens, tokens_yaml());
        daemon = std::make_unique<test::TestDaemon>(
            runbooks, [this](daemon::Config& c) { c.tokens_file = tokens; });
    }

    Result<http::ClientResponse> send(const std::string& method, const std::string& path,
                                      Headers headers, const std::string& body = {}) const {
        if (!body.empty()) {
            headers.emplace_back("Content-Type", "application/json");
        }
        return http::send_request(method, daemon->url(path), body, headers);
    }

    unsigned status(const std::string& method, const std::string& path, const Headers& headers,
                    const std::string& body = {}) const {
        auto r = send(method, path, headers, body);
        REQUIRE(r.ok());
        return r->status;
    }

    // Posts a notification of alert Echo (starts runs of echo and other) and waits for them.
    void start_runs(const std::string& instance) const {
        auto r = send("POST", "/api/v1/webhooks/alertmanager", bearer("secret-p-webhook"),
                      test::firing_notification("Echo", instance));
        REQUIRE(r.ok());
        REQUIRE(r->status == 200);
        REQUIRE(daemon->wait_runs_finished());
    }

    test::TempDir tokens_dir;
    std::string tokens;
    std::unique_ptr<test::TestDaemon> daemon;
};

// The scopes each principal's requests should pass, written out here rather than taken from
// the code under test: run and approve include read, admin includes everything.
const std::map<std::string, std::set<auth::Scope>> kGrants = {
    {"p-webhook", {auth::Scope::Webhook}},
    {"p-read", {auth::Scope::Read}},
    {"p-run", {auth::Scope::Run, auth::Scope::Read}},
    {"p-approve", {auth::Scope::Approve, auth::Scope::Read}},
    {"p-admin",
     {auth::Scope::Webhook, auth::Scope::Read, auth::Scope::Run, auth::Scope::Approve,
      auth::Scope::Admin}}};

// The routes the API registers, read from the router itself so that a new route is covered
// as soon as it exists.
std::vector<http::Router::RouteInfo> registered_routes() {
    http::Router router;
    api::ApiContext context;
    api::add_routes(router, context);
    return router.routes();
}

// A concrete path for a route pattern: {id} becomes `run_id`, {name} the runbook echo.
std::string concrete(const std::string& pattern, const std::string& run_id) {
    std::string out = pattern;
    for (const auto& [placeholder, value] : {std::pair<std::string, std::string>{"{id}", run_id},
                                             {"{name}", "echo"},
                                             {"{step}", "say"}}) {
        for (auto at = out.find(placeholder); at != std::string::npos; at = out.find(placeholder)) {
            out.replace(at, placeholder.size(), value);
        }
    }
    return out;
}

std::string body_for(const std::string& pattern) {
    return pattern == "/api/v1/webhooks/alertmanager" ? test::firing_notification("None", "x")
                                                      : std::string();
}

// The value of one series in a /metrics scrape, or -1 when it is missing. Metrics are
// process-wide, so tests compare values before and after.
double counter(const std::string& text, const std::string& series) {
    const auto at = text.find("\n" + series + " ");
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + series.size() + 2));
}

std::string scrape(const AuthDaemon& d) {
    auto m = d.send("GET", "/metrics", bearer("secret-p-read"));
    REQUIRE(m.ok());
    REQUIRE(m->status == 200);
    return m->body;
}

}  // namespace

TEST_CASE("every route needs its scope: no token, bad token, wrong scope and right scope",
          "[auth]") {
    AuthDaemon d;
    d.start_runs("matrix");
    const auto routes = registered_routes();
    REQUIRE(routes.size() >= 10);

    for (const auto& route : routes) {
        const std::string path = concrete(route.pattern, "1");
        const std::string body = body_for(route.pattern);
        INFO(route.method << " " << route.pattern);
        if (route.access.is_open()) {
            // Only the probes and the banner may be open; anything else open is a mistake.
            CHECK(
                (route.pattern == "/" || route.pattern == "/livez" || route.pattern == "/readyz"));
            CHECK(d.status(route.method, path, {}) < 400);
            continue;
        }
        auto none = d.send(route.method, path, {}, body);
        REQUIRE(none.ok());
        CHECK(none->status == 401);
        CHECK(Json::parse(none->body)["error"]["code"] == "unauthenticated");
        CHECK(d.status(route.method, path, bearer("not-a-secret"), body) == 401);
        CHECK(d.status(route.method, path, basic("alertmanager", "wrong"), body) == 401);

        for (const auto& [name, grants] : kGrants) {
            INFO("principal " << name);
            const unsigned status = d.status(route.method, path, bearer("secret-" + name), body);
            if (grants.count(route.access.required()) != 0) {
                CHECK(status != 401);
                CHECK(status != 403);
            } else {
                CHECK(status == 403);
            }
        }
    }
}

TEST_CASE("a 401 challenges for Bearer and Basic and says what to send", "[auth]") {
    AuthDaemon d;

    auto r = d.send("GET", "/api/v1/runs", {});

    REQUIRE(r.ok());
    CHECK(r->status == 401);
    CHECK(r->www_authenticate == R"(Bearer realm="runbookd", Basic realm="runbookd")");
    CHECK_THAT(Json::parse(r->body)["error"]["message"].get<std::string>(),
               Catch::Contains("Authorization: Bearer"));
}

TEST_CASE("HTTP Basic needs the principal's user name and takes its secret as password", "[auth]") {
    AuthDaemon d;
    const std::string payload = test::firing_notification("None", "basic");

    CHECK(d.status("POST", "/api/v1/webhooks/alertmanager", basic("alertmanager", "secret-am"),
                   payload) == 200);
    CHECK(d.status("POST", "/api/v1/webhooks/alertmanager", basic("someone", "secret-am"),
                   payload) == 401);
    CHECK(d.status("POST", "/api/v1/webhooks/alertmanager", basic("p-admin", "secret-p-admin"),
                   payload) == 401);
    CHECK(d.status("POST", "/api/v1/webhooks/alertmanager", bearer("secret-am"), payload) == 200);
    CHECK(d.status("GET", "/api/v1/runs", basic("alertmanager", "secret-am")) == 403);
    CHECK(d.status("GET", "/api/v1/runs", {{"Authorization", "Basic !!notbase64"}}) == 401);
    CHECK(d.status("GET", "/api/v1/runs", {{"Authorization", "bearer secret-p-read"}}) == 200);
}

TEST_CASE("a runbooks allow-list limits run requests to the runbooks it names", "[auth]") {
    AuthDaemon d;
    d.start_runs("allow");
    const std::string echo_run =
        test::query_value(d.daemon->db(), "SELECT id FROM runs WHERE runbook = 'echo'");
    const std::string other_run =
        test::query_value(d.daemon->db(), "SELECT id FROM runs WHERE runbook = 'other'");

    auto refused =
        d.send("POST", "/api/v1/runs/" + other_run + "/cancel", bearer("secret-limited"));
    const unsigned allowed =
        d.status("POST", "/api/v1/runs/" + echo_run + "/cancel", bearer("secret-limited"));

    REQUIRE(refused.ok());
    CHECK(refused->status == 403);
    CHECK_THAT(Json::parse(refused->body)["error"]["message"].get<std::string>(),
               Catch::Contains("\"other\""));
    CHECK(allowed == 409);  // past the check: the run has already ended
    CHECK(d.status("POST", "/api/v1/runs/999/cancel", bearer("secret-limited")) == 404);
    CHECK(d.status("POST", "/api/v1/runs/" + other_run + "/cancel", bearer("secret-p-run")) == 409);
    // The allow-list does not limit reading.
    CHECK(d.status("GET", "/api/v1/runs/" + other_run, bearer("secret-limited")) == 200);
    CHECK(test::wait_query_value(
        d.daemon->db(),
        "SELECT json_extract(detail, '$.status') || ' ' || json_extract(detail, '$.reason') || "
        "' ' || json_extract(detail, '$.route') || ' ' || json_extract(detail, '$.principal') "
        "FROM events WHERE kind = 'auth.denied'",
        "403 runbook_not_allowed /api/v1/runs/{id}/cancel limited", 5s));
}

TEST_CASE("a cancel is recorded as the authenticated principal, who cannot claim another name",
          "[auth]") {
    test::TempDir gate_dir;
    const std::string gate = gate_dir.file("gate");
    AuthDaemon d({{"gated.yaml", test::gated_runbook(gate)}});
    REQUIRE(d.status("POST", "/api/v1/webhooks/alertmanager", bearer("secret-p-webhook"),
                     test::firing_notification("Gated", "g1")) == 200);
    REQUIRE(test::wait_query_value(d.daemon->db(), "SELECT state FROM runs WHERE id = 1", "running",
                                   10s));

    const unsigned claimed = d.status("POST", "/api/v1/runs/1/cancel", bearer("secret-p-run"),
                                      R"({"actor": "somebody-else"})");
    const unsigned cancelled = d.status("POST", "/api/v1/runs/1/cancel", bearer("secret-p-run"),
                                        R"({"reason": "wrong host"})");

    CHECK(claimed == 400);
    CHECK(cancelled == 202);
    REQUIRE(d.daemon->wait_runs_finished());
    CHECK(test::query_value(d.daemon->db(), "SELECT cancelled_by FROM runs WHERE id = 1") ==
          "token:p-run");
    CHECK(test::query_value(d.daemon->db(),
                            "SELECT json_extract(detail, '$.cancelled_by') FROM events WHERE "
                            "kind = 'run.finished' AND run_id = 1") == "token:p-run");
}

TEST_CASE("401 and 403 are recorded as auth.denied events without the secret", "[auth]") {
    AuthDaemon d;
    const std::string before = scrape(d);

    REQUIRE(d.status("GET", "/api/v1/runs", bearer("leaked-guess-1234")) == 401);
    REQUIRE(d.status("POST", "/api/v1/reload", bearer("secret-p-read")) == 403);
    REQUIRE(d.status("GET", "/metrics", {}) == 401);

    REQUIRE(test::wait_query_value(
        d.daemon->db(), "SELECT count(*) FROM events WHERE kind = 'auth.denied'", "3", 5s));
    const auto rows =
        test::query(d.daemon->db(),
                    "SELECT json_extract(detail, '$.status'), json_extract(detail, '$.reason'), "
                    "json_extract(detail, '$.method'), json_extract(detail, '$.route'), "
                    "json_extract(detail, '$.principal'), json_extract(detail, '$.scheme'), "
                    "json_extract(detail, '$.remote_addr') LIKE '127.0.0.1:%' "
                    "FROM events WHERE kind = 'auth.denied' ORDER BY id");
    CHECK(rows == std::vector<std::vector<std::string>>{
                      {"401", "bad_credentials", "GET", "/api/v1/runs", "", "bearer", "1"},
                      {"403", "missing_scope", "POST", "/api/v1/reload", "p-read", "bearer", "1"},
                      {"401", "missing_credentials", "GET", "/metrics", "", "", "1"}});
    CHECK(test::query_value(d.daemon->db(),
                            "SELECT count(*) FROM events WHERE detail LIKE '%leaked-guess%' OR "
                            "detail LIKE '%secret-p-read%'") == "0");
    const std::string after = scrape(d);
    for (const char* reason : {"bad_credentials", "missing_scope", "missing_credentials"}) {
        const std::string series =
            fmt::format("runbookd_auth_denied_total{{reason=\"{}\"}}", reason);
        CHECK(counter(after, series) - counter(before, series) == 1);
    }
}

TEST_CASE("a flood of bad credentials is refused and counted, but recorded at a bounded rate",
          "[auth]") {
    AuthDaemon d;
    const std::string before = scrape(d);

    for (int i = 0; i < 100; ++i) {
        REQUIRE(d.status("GET", "/api/v1/runs", bearer(fmt::format("guess-{}", i))) == 401);
    }

    const std::string after = scrape(d);
    const std::string series = "runbookd_auth_denied_total{reason=\"bad_credentials\"}";
    CHECK(counter(after, series) - counter(before, series) == 100);
    CHECK(counter(after, "runbookd_auth_denied_unrecorded_total") -
              counter(before, "runbookd_auth_denied_unrecorded_total") >=
          50);
    test::wait_until([] { return false; }, 300ms);
    const int recorded = std::stoi(test::query_value(
        d.daemon->db(), "SELECT count(*) FROM events WHERE kind = 'auth.denied'"));
    CHECK(recorded >= 20);
    CHECK(recorded <= 50);
}

TEST_CASE("without tokens the API is open and runbookd refuses a non-loopback address", "[auth]") {
    test::TempDir dir;
    std::filesystem::create_directories(dir.path() / "runbooks");

    auto refused = test::run_command({RUNBOOKD_BINARY, "--listen", "0.0.0.0:0", "--runbooks",
                                      dir.file("runbooks"), "--db", dir.file("a.db")});
    auto refused_all = test::run_command({RUNBOOKD_BINARY, "--listen", ":0", "--runbooks",
                                          dir.file("runbooks"), "--db", dir.file("b.db")});

    CHECK(refused.exit_code == 2);
    CHECK_THAT(refused.output, Catch::Contains("not loopback and no tokens are configured") &&
                                   Catch::Contains("auth.tokens_file"));
    CHECK(refused_all.exit_code == 2);
    test::TestDaemon open({});
    auto r = open.get("/api/v1/runs");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
}

TEST_CASE("runbookd refuses to start with a bad tokens file, naming file and line", "[auth]") {
    test::TempDir dir;
    std::filesystem::create_directories(dir.path() / "runbooks");
    const std::string tokens = dir.file("tokens.yaml");
    test::write_file(tokens,
                     "principals:\n"
                     "  - name: alice\n"
                     "    sha256: abc\n"
                     "    scopes: [read, sudo]\n"
                     "  - name: alice\n"
                     "    sha256: " +
                         auth::secret_hash_hex("x") +
                         "\n"
                         "    scopes: [read]\n"
                         "  - name: bob\n"
                         "    colour: blue\n");
    test::write_file(dir.file("runbookd.yaml"), "auth:\n  tokens_file: tokens.yaml\n");

    auto r = test::run_command({RUNBOOKD_BINARY, "--config", dir.file("runbookd.yaml"), "--listen",
                                "127.0.0.1:0", "--runbooks", dir.file("runbooks"), "--db",
                                dir.file("x.db")});

    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains(tokens + ":3:13: principals[0].sha256: expected the 64 "
                                                  "hex digits"));
    CHECK_THAT(r.output, Catch::Contains(tokens + ":4:20: principals[0].scopes: unknown scope "
                                                  "\"sudo\""));
    CHECK_THAT(r.output, Catch::Contains(tokens + ":5:11: principals[1].name: \"alice\" is "
                                                  "listed twice"));
    CHECK_THAT(r.output, Catch::Contains(tokens + ":9:5: unknown key \"colour\""));
    CHECK_THAT(r.output, !Catch::Contains("listening"));
}

TEST_CASE("a reload takes a new tokens file, and keeps the old one when it is invalid", "[auth]") {
    AuthDaemon d;
    REQUIRE(d.status("GET", "/api/v1/runs", bearer("secret-new")) == 401);

    test::write_file(
        d.tokens, tokens_yaml() + fmt::format("  - name: new\n    sha256: {}\n    scopes: [read]\n",
                                              auth::secret_hash_hex("secret-new")));
    const unsigned reloaded = d.status("POST", "/api/v1/reload", bearer("secret-p-admin"));
    const unsigned now = d.status("GET", "/api/v1/runs", bearer("secret-new"));
    test::write_file(d.tokens, "principals:\n  - name: broken\n");
    auto refused = d.send("POST", "/api/v1/reload", bearer("secret-p-admin"));

    CHECK(reloaded == 200);
    CHECK(now == 200);
    REQUIRE(refused.ok());
    CHECK(refused->status == 422);
    CHECK_THAT(refused->body, Catch::Contains(d.tokens + ":2:5: principals[0]: missing key"));
    CHECK(d.status("GET", "/api/v1/runs", bearer("secret-new")) == 200);
    CHECK(test::query_value(d.daemon->db(),
                            "SELECT json_extract(detail, '$.actor') FROM events WHERE kind = "
                            "'runbooks.reloaded'") == "token:p-admin");
}

TEST_CASE("manual runs and approvals take the actor from the token and obey the allow-list",
          "[auth][manual][approval]") {
    constexpr const char* kGate = R"(name: gate
matchers: ['alertname="Gate"']
steps:
  - name: restart
    approval: {approvers: [p-approve]}
    argv: [/bin/echo, restarted]
)";
    AuthDaemon d({{"echo.yaml", kEcho}, {"other.yaml", kOther}, {"gate.yaml", kGate}});
    const auto& db = d.daemon->db();

    const unsigned other = d.status("POST", "/api/v1/runbooks/other/runs", bearer("secret-limited"),
                                    R"({"reason": "try"})");
    const unsigned missing = d.status("POST", "/api/v1/runbooks/nope/runs",
                                      bearer("secret-limited"), R"({"reason": "try"})");
    auto echo = d.send("POST", "/api/v1/runbooks/echo/runs", bearer("secret-limited"),
                       R"({"reason": "by hand"})");
    const unsigned claimed = d.status("POST", "/api/v1/runbooks/echo/runs", bearer("secret-p-run"),
                                      R"({"actor": "someone-else"})");

    CHECK(other == 403);
    CHECK(missing == 403);  // a limited principal learns nothing about other runbooks
    REQUIRE(echo.ok());
    INFO(echo->body);
    CHECK(echo->status == 201);
    CHECK(claimed == 400);
    const auto echo_id = Json::parse(echo->body)["id"].get<std::int64_t>();
    CHECK(test::query_value(db, fmt::format("SELECT actor FROM runs WHERE id = {}", echo_id)) ==
          "token:limited");

    REQUIRE(d.status("POST", "/api/v1/webhooks/alertmanager", bearer("secret-p-webhook"),
                     test::firing_notification("Gate", "g")) == 200);
    const std::string gate_run =
        test::query_value(db, "SELECT id FROM runs WHERE runbook = 'gate'");
    REQUIRE(test::wait_query_value(db, "SELECT state FROM runs WHERE id = " + gate_run,
                                   "waiting_approval", 10s));
    const std::string approve = "/api/v1/runs/" + gate_run + "/steps/restart/approve";

    CHECK(d.status("POST", approve, bearer("secret-p-run")) == 403);    // no approve scope
    CHECK(d.status("POST", approve, bearer("secret-p-admin")) == 403);  // not an approver
    CHECK(d.status("POST", approve, bearer("secret-p-approve")) == 200);
    CHECK(test::wait_query_value(db, "SELECT state FROM runs WHERE id = " + gate_run, "succeeded",
                                 10s));
    CHECK(test::query_value(db, "SELECT decided_by FROM approvals WHERE run_id = " + gate_run) ==
          "token:p-approve");
}
