#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "auth/auth.hpp"
#include "support/support.hpp"

// runbookctl against a runbookd that requires credentials: where the token comes from, what a
// 401 or 403 looks like, and `token create` producing an entry runbookd accepts.

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;

std::string principal(const std::string& name, const std::string& secret,
                      const std::string& scopes) {
    return fmt::format("  - name: {}\n    sha256: {}\n    scopes: {}\n", name,
                       auth::secret_hash_hex(secret), scopes);
}

// runbookctl with a clean environment: no token or URL from the test's own, and HOME and
// XDG_CONFIG_HOME pointing into `home` so that no user config file is read.
test::CommandResult ctl(const test::TempDir& home, std::vector<std::string> args,
                        std::vector<std::string> env = {}) {
    std::vector<std::string> argv = {"/usr/bin/env",
                                     "-u",
                                     "RUNBOOKD_TOKEN",
                                     "-u",
                                     "RUNBOOKD_URL",
                                     "HOME=" + home.path().string(),
                                     "XDG_CONFIG_HOME=" + home.file("xdg")};
    argv.insert(argv.end(), env.begin(), env.end());
    argv.push_back(RUNBOOKCTL_BINARY);
    argv.insert(argv.end(), args.begin(), args.end());
    return test::run_command(argv);
}

struct Fixture {
    Fixture() {
        test::write_file(tokens, "principals:\n" + principal("reader", "read-secret", "[read]") +
                                     principal("hook", "hook-secret", "[webhook]"));
        daemon = std::make_unique<test::TestDaemon>(
            test::RunbookFiles{}, [this](daemon::Config& c) { c.tokens_file = tokens; });
    }

    test::TempDir home;
    std::string tokens = home.file("tokens.yaml");
    std::unique_ptr<test::TestDaemon> daemon;
};

}  // namespace

TEST_CASE(
    "runbookctl takes the token from --token, RUNBOOKD_TOKEN or its config file, in that "
    "order",
    "[auth][cli]") {
    Fixture f;
    const std::string url = f.daemon->url();
    test::write_file(f.home.file("xdg/runbookctl/config.yaml"),
                     fmt::format("url: {}\ntoken: read-secret\n", url));
    test::write_file(f.home.file("bad-token.yaml"), fmt::format("url: {}\ntoken: wrong\n", url));

    SECTION("the default config file gives URL and token") {
        auto r = ctl(f.home, {"runs", "list"});
        INFO(r.output);
        CHECK(r.exit_code == 0);
        CHECK_THAT(r.output, Catch::Contains("ID"));
    }
    SECTION("the environment wins over the file") {
        auto r = ctl(f.home, {"runs", "list"}, {"RUNBOOKD_TOKEN=hook-secret"});
        CHECK(r.exit_code == 8);
        CHECK_THAT(r.output,
                   Catch::Contains("permission denied") && Catch::Contains("needs the read scope"));
    }
    SECTION("the flag wins over the environment") {
        auto r =
            ctl(f.home, {"--token", "read-secret", "runs", "list"}, {"RUNBOOKD_TOKEN=hook-secret"});
        CHECK(r.exit_code == 0);
    }
    SECTION("--config names another file") {
        auto r = ctl(f.home, {"--config", f.home.file("bad-token.yaml"), "runbooks", "list"});
        CHECK(r.exit_code == 7);
        CHECK_THAT(r.output, Catch::Contains("refused the credentials") &&
                                 Catch::Contains("the token is not valid"));
    }
    SECTION("no token at all says where to put one") {
        auto r = ctl(f.home, {"--url", url, "--config", f.home.file("none.yaml"), "runs", "list"});
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.output, Catch::Contains("none.yaml"));
        test::write_file(f.home.file("empty.yaml"), "url: " + url + "\n");
        auto r2 = ctl(f.home, {"--config", f.home.file("empty.yaml"), "runs", "list"});
        CHECK(r2.exit_code == 7);
        CHECK_THAT(r2.output, Catch::Contains("no token given"));
    }
}

TEST_CASE("runbookctl refuses a config file with an unknown key, naming its line", "[auth][cli]") {
    test::TempDir home;
    test::write_file(home.file("c.yaml"), "url: http://127.0.0.1:1\ntokn: x\n");

    auto r = ctl(home, {"--config", home.file("c.yaml"), "runs", "list"});

    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains(home.file("c.yaml") + ":2:1: unknown key \"tokn\""));
}

TEST_CASE("token create prints a secret once and an entry that runbookd accepts", "[auth][cli]") {
    test::TempDir home;

    auto r = ctl(home, {"-o", "json", "token", "create", "--name", "oncall", "--scope", "read",
                        "--scope", "run", "--runbook", "echo"});
    auto again =
        ctl(home, {"-o", "json", "token", "create", "--name", "oncall", "--scope", "read"});
    auto bad = ctl(home, {"token", "create", "--name", "on call", "--scope", "read"});
    auto bad_scope = ctl(home, {"token", "create", "--name", "x", "--scope", "root"});

    REQUIRE(r.exit_code == 0);
    const Json out = Json::parse(r.output.substr(0, r.output.rfind('}') + 1));
    const std::string secret = out["secret"];
    CHECK(secret.rfind("rbd_", 0) == 0);
    CHECK(secret.size() >= 40);
    CHECK(out["sha256"] == auth::secret_hash_hex(secret));
    CHECK(Json::parse(again.output.substr(0, again.output.rfind('}') + 1))["secret"] != secret);
    CHECK(bad.exit_code == 2);
    CHECK(bad_scope.exit_code == 2);

    test::write_file(home.file("tokens.yaml"), "principals:\n" + out["entry"].get<std::string>());
    test::TestDaemon d({}, [&](daemon::Config& c) { c.tokens_file = home.file("tokens.yaml"); });
    auto listed = ctl(home, {"--url", d.url(), "--token", secret, "runs", "list"});
    auto reload = ctl(home, {"--url", d.url(), "--token", secret, "reload"});
    CHECK(listed.exit_code == 0);
    CHECK(reload.exit_code == 8);
}

TEST_CASE(
    "runbookctl runs follow and runs cancel send the token; the cancel is recorded as its "
    "principal",
    "[auth][cli]") {
    test::TempDir home;
    test::TempDir gates;
    test::write_file(home.file("tokens.yaml"), "principals:\n" +
                                                   principal("oncall", "run-secret", "[run]") +
                                                   principal("hook", "hook-secret", "[webhook]"));
    test::TestDaemon d({{"gated.yaml", test::gated_runbook(gates.file("gate"))}},
                       [&](daemon::Config& c) { c.tokens_file = home.file("tokens.yaml"); });
    REQUIRE(http::send_request(
                "POST", d.url("/api/v1/webhooks/alertmanager"),
                test::firing_notification("Gated", "a"),
                {{"Content-Type", "application/json"}, {"Authorization", "Bearer hook-secret"}})
                ->status == 200);
    REQUIRE(test::wait_query_value(d.db(), "SELECT state FROM runs WHERE id = 1", "running", 10s));

    auto no_token = ctl(home, {"--url", d.url(), "runs", "cancel", "1"});
    auto follow_denied =
        ctl(home, {"--url", d.url(), "--token", "hook-secret", "runs", "follow", "1"});
    auto cancelled = ctl(home, {"--url", d.url(), "--token", "run-secret", "runs", "cancel", "1",
                                "--actor", "mallory", "--reason", "wrong host"});
    auto followed = ctl(home, {"--url", d.url(), "--token", "run-secret", "runs", "follow", "1"});

    CHECK(no_token.exit_code == 7);
    CHECK(follow_denied.exit_code == 8);
    INFO(cancelled.output);
    CHECK(cancelled.exit_code == 0);
    CHECK(followed.exit_code == 5);  // the run ended cancelled
    CHECK_THAT(followed.output, Catch::Contains("cancelled"));
    CHECK(test::query_value(d.db(), "SELECT cancelled_by FROM runs WHERE id = 1") ==
          "token:oncall");
}
