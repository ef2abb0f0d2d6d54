#include "auth/auth.hpp"

#include <catch2/catch.hpp>

#include "support/support.hpp"

namespace {

using namespace runbookd;

auth::Principal with_scopes(std::vector<auth::Scope> scopes,
                            std::vector<std::string> runbooks = {}) {
    auth::Principal p;
    p.name = "p";
    p.scopes = std::move(scopes);
    p.runbooks = std::move(runbooks);
    return p;
}

}  // namespace

TEST_CASE("run and approve include read, admin includes everything, webhook nothing else",
          "[auth]") {
    using auth::Scope;

    CHECK(with_scopes({Scope::Run}).has(Scope::Read));
    CHECK(with_scopes({Scope::Approve}).has(Scope::Read));
    CHECK_FALSE(with_scopes({Scope::Run}).has(Scope::Approve));
    CHECK_FALSE(with_scopes({Scope::Read}).has(Scope::Run));
    CHECK_FALSE(with_scopes({Scope::Webhook}).has(Scope::Read));
    CHECK_FALSE(with_scopes({Scope::Read}).has(Scope::Webhook));
    for (const auto s : {Scope::Webhook, Scope::Read, Scope::Run, Scope::Approve, Scope::Admin}) {
        CHECK(with_scopes({Scope::Admin}).has(s));
    }
}

TEST_CASE("an allow-list limits runbooks, except for admin", "[auth]") {
    using auth::Scope;

    CHECK(with_scopes({Scope::Run}).may_use("anything"));
    CHECK(with_scopes({Scope::Run}, {"a"}).may_use("a"));
    CHECK_FALSE(with_scopes({Scope::Run}, {"a"}).may_use("b"));
    CHECK(with_scopes({Scope::Run, Scope::Admin}, {"a"}).may_use("b"));
}

TEST_CASE("loopback addresses are told from the others", "[auth]") {
    for (const char* host : {"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"}) {
        INFO(host);
        CHECK(auth::is_loopback_host(host));
    }
    for (const char* host : {"0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "localhost", "", "::2"}) {
        INFO(host);
        CHECK_FALSE(auth::is_loopback_host(host));
    }
}

TEST_CASE("a tokens file loads principals and reports every problem with its line", "[auth]") {
    test::TempDir dir;
    const std::string path = dir.file("tokens.yaml");
    const std::string hash = auth::secret_hash_hex("s3cret");

    SECTION("a valid file") {
        test::write_file(path, "principals:\n  - name: a\n    sha256: " + hash +
                                   "\n    scopes: [read, run]\n    runbooks: [x]\n"
                                   "    username: alice\n");
        auto p = auth::load_tokens_file(path);
        REQUIRE(p.ok());
        REQUIRE(p->size() == 1);
        CHECK((*p)[0]->name == "a");
        CHECK((*p)[0]->username == "alice");
        CHECK((*p)[0]->runbooks == std::vector<std::string>{"x"});
    }
    SECTION("upper-case hex is the same hash") {
        std::string upper = hash;
        for (auto& c : upper) {
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        test::write_file(
            path, "principals:\n  - name: a\n    sha256: " + upper + "\n    scopes: [read]\n");
        CHECK(auth::load_tokens_file(path).ok());
    }
    SECTION("two principals with one secret") {
        test::write_file(path, "principals:\n  - name: a\n    sha256: " + hash +
                                   "\n    scopes: [read]\n  - name: b\n    sha256: " + hash +
                                   "\n    scopes: [read]\n");
        auto p = auth::load_tokens_file(path);
        REQUIRE_FALSE(p.ok());
        CHECK_THAT(p.error().message, Catch::Contains(path + ":6:13: principals[1].sha256: "
                                                             "another principal has the same "
                                                             "secret"));
    }
    SECTION("no principals, empty scopes, a user name with a colon") {
        test::write_file(path, "principals: []\n");
        CHECK_THAT(auth::load_tokens_file(path).error().message,
                   Catch::Contains(path + ":1:13: principals: expected a non-empty list"));
        test::write_file(path, "principals:\n  - name: a\n    sha256: " + hash +
                                   "\n    scopes: []\n    username: 'a:b'\n");
        const auto message = auth::load_tokens_file(path).error().message;
        CHECK_THAT(message, Catch::Contains(path + ":4:13: principals[0].scopes: expected a "
                                                   "non-empty list"));
        CHECK_THAT(message, Catch::Contains(path + ":5:15: principals[0].username: must be"));
    }
    SECTION("a missing file and a YAML syntax error") {
        CHECK_THAT(auth::load_tokens_file(dir.file("nope.yaml")).error().message,
                   Catch::Contains("nope.yaml: cannot read tokens file"));
        test::write_file(path, "principals: [\n");
        CHECK_THAT(auth::load_tokens_file(path).error().message,
                   Catch::Contains(path + ":") && Catch::Contains("YAML syntax error"));
    }
}

TEST_CASE("generated secrets are random and URL-safe", "[auth]") {
    const std::string a = auth::generate_secret();
    const std::string b = auth::generate_secret();

    CHECK(a != b);
    CHECK(a.size() == 4 + 43);
    CHECK(a.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                              4) == std::string::npos);
}
