#include <memory>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <runbookd/timestamp.hpp>

#include "auth/auth.hpp"
#include "support/support.hpp"

// A real Alertmanager (Debian's prometheus-alertmanager) posting to a runbookd that requires
// credentials, with each of Alertmanager's own options: `authorization` (bearer) and
// `basic_auth`, and once with a wrong password. Both processes run on loopback ports and are
// stopped by PID.

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;

constexpr const char* kRunbook = R"(name: am-auth
matchers: ['alertname=~"ViaBearer|ViaBasic"']
steps:
  - name: say
    argv: [/bin/echo, "{{ alert.labels.alertname }}"]
)";

// Three receivers, chosen by alertname: bearer, basic, and basic with a wrong password.
std::string alertmanager_config(std::uint16_t port) {
    const std::string url = fmt::format("http://127.0.0.1:{}/api/v1/webhooks/alertmanager", port);
    return fmt::format(R"(route:
  receiver: bearer
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  routes:
    - matchers: ['alertname="ViaBasic"']
      receiver: basic
    - matchers: ['alertname="ViaWrongPassword"']
      receiver: wrong
receivers:
  - name: bearer
    webhook_configs:
      - url: {0}
        http_config:
          authorization:
            credentials: am-bearer-secret
  - name: basic
    webhook_configs:
      - url: {0}
        http_config:
          basic_auth:
            username: alertmanager
            password: am-basic-secret
  - name: wrong
    webhook_configs:
      - url: {0}
        http_config:
          basic_auth:
            username: alertmanager
            password: not-the-password
)",
                       url);
}

bool answers(const std::string& url) {
    auto r = http::send_request("GET", url, {}, {}, 1s);
    return r.ok() && r->status == 200;
}

}  // namespace

TEST_CASE("Alertmanager delivers with its authorization and basic_auth options", "[e2e][auth]") {
    test::TempDir dir;
    test::write_file(dir.file("tokens.yaml"),
                     fmt::format("principals:\n"
                                 "  - name: am-bearer\n    sha256: {}\n    scopes: [webhook]\n"
                                 "  - name: am-basic\n    username: alertmanager\n    sha256: {}\n"
                                 "    scopes: [webhook]\n",
                                 auth::secret_hash_hex("am-bearer-secret"),
                                 auth::secret_hash_hex("am-basic-secret")));
    test::RunbookdProcess rb({{"am.yaml", kRunbook}},
                             fmt::format("auth:\n  tokens_file: {}\n", dir.file("tokens.yaml")));
    REQUIRE(rb.wait_ready());
    const std::uint16_t am_port = test::free_tcp_port();
    test::write_file(dir.file("alertmanager.yml"),
                     alertmanager_config(static_cast<std::uint16_t>(
                         std::stoi(rb.url().substr(rb.url().rfind(':') + 1)))));
    test::Subprocess am({ALERTMANAGER_BINARY, "--config.file=" + dir.file("alertmanager.yml"),
                         "--storage.path=" + dir.file("am-data"),
                         fmt::format("--web.listen-address=127.0.0.1:{}", am_port),
                         "--cluster.listen-address=", "--log.level=debug"},
                        dir.file("alertmanager.log"));
    const auto logs = [&] {
        return "runbookd log:\n" + rb.log() + "\nalertmanager log:\n" +
               test::read_file(dir.file("alertmanager.log"));
    };
    if (!test::wait_until(
            [&] { return answers(fmt::format("http://127.0.0.1:{}/-/ready", am_port)); }, 20s)) {
        FAIL("Alertmanager did not become ready\n" << logs());
    }

    Json alerts = Json::array();
    for (const char* name : {"ViaBearer", "ViaBasic", "ViaWrongPassword"}) {
        alerts.push_back({{"labels", {{"alertname", name}, {"instance", "web-1"}}},
                          {"startsAt", Timestamp::now().to_rfc3339()}});
    }
    auto posted =
        http::send_request("POST", fmt::format("http://127.0.0.1:{}/api/v2/alerts", am_port),
                           alerts.dump(), {{"Content-Type", "application/json"}});
    REQUIRE(posted.ok());
    REQUIRE(posted->status == 200);

    if (!test::wait_until(
            [&] {
                return test::query_value(
                           rb.db(), "SELECT count(*) FROM runs WHERE state = 'succeeded'") == "2" &&
                       test::query_value(rb.db(),
                                         "SELECT count(*) FROM events WHERE kind = "
                                         "'auth.denied'") != "0";
            },
            30s)) {
        FAIL("expected two runs and a refused delivery\n" << logs());
    }
    CHECK(test::query(rb.db(), "SELECT receiver FROM deliveries ORDER BY receiver") ==
          std::vector<std::vector<std::string>>{{"basic"}, {"bearer"}});
    CHECK(test::query(rb.db(),
                      "SELECT DISTINCT json_extract(detail, '$.status'), "
                      "json_extract(detail, '$.reason'), json_extract(detail, '$.route'), "
                      "json_extract(detail, '$.scheme') FROM events WHERE kind = 'auth.denied'") ==
          std::vector<std::vector<std::string>>{
              {"401", "bad_credentials", "/api/v1/webhooks/alertmanager", "basic"}});
    CHECK(test::query_value(rb.db(),
                            "SELECT count(*) FROM events WHERE detail LIKE "
                            "'%not-the-password%'") == "0");
    am.stop();
}
