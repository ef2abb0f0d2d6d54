#include <catch2/catch.hpp>

#include "auth/auth.hpp"
#include "support/support.hpp"

// TLS on the listener and client certificates, with certificates made here by the openssl
// command-line tool: a CA, a server certificate for 127.0.0.1, a client certificate from the
// same CA and one from a CA runbookd does not trust.

namespace {

using namespace runbookd;
using namespace std::chrono_literals;

void openssl(std::vector<std::string> args) {
    args.insert(args.begin(), "/usr/bin/openssl");
    const auto r = test::run_command(args);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
}

// Writes NAME.key and NAME.crt in `dir`, signed by CA `ca` (or self-signed when empty).
void make_cert(const test::TempDir& dir, const std::string& name, const std::string& ca,
               const std::string& extensions = "") {
    const auto f = [&](const std::string& ext) {
        return dir.file(name + ext);
    };
    if (ca.empty()) {
        openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", f(".key"), "-out", f(".crt"), "-days", "1", "-subj",
                 "/CN=" + name});
        return;
    }
    test::write_file(f(".ext"), extensions.empty() ? "basicConstraints=CA:FALSE\n" : extensions);
    openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f(".key"), "-out", f(".csr"), "-subj", "/CN=" + name});
    openssl({"x509", "-req", "-in", f(".csr"), "-CA", dir.file(ca + ".crt"), "-CAkey",
             dir.file(ca + ".key"), "-CAcreateserial", "-out", f(".crt"), "-days", "1", "-extfile",
             f(".ext")});
}

struct Certificates {
    Certificates() {
        make_cert(dir, "ca", "");
        make_cert(dir, "other-ca", "");
        make_cert(dir, "server", "ca", "subjectAltName=IP:127.0.0.1\n");
        make_cert(dir, "client", "ca");
        make_cert(dir, "rogue", "other-ca");
    }
    std::string crt(const std::string& name) const { return dir.file(name + ".crt"); }
    std::string key(const std::string& name) const { return dir.file(name + ".key"); }

    test::TempDir dir;
};

const Certificates& certificates() {
    static const Certificates certs;
    return certs;
}

std::unique_ptr<test::TestDaemon> tls_daemon(const Certificates& c, bool client_certs,
                                             const std::string& tokens_file = "") {
    return std::make_unique<test::TestDaemon>(test::RunbookFiles{}, [&](daemon::Config& config) {
        config.http.tls = {c.crt("server"), c.key("server"), client_certs ? c.crt("ca") : ""};
        config.tokens_file = tokens_file;
    });
}

std::string https_url(test::TestDaemon& d, const std::string& path) {
    return fmt::format("https://127.0.0.1:{}{}", d.daemon().port(), path);
}

}  // namespace

TEST_CASE("with http.tls runbookd serves HTTPS, verified against the CA", "[tls]") {
    const auto& c = certificates();
    auto d = tls_daemon(c, false);

    auto ok =
        http::send_request("GET", https_url(*d, "/api/v1/runs"), {}, {}, 5s, {c.crt("ca"), "", ""});
    auto untrusted = http::send_request("GET", https_url(*d, "/api/v1/runs"), {}, {}, 5s,
                                        {c.crt("other-ca"), "", ""});
    auto plain = http::send_request("GET", d->url("/api/v1/runs"), {}, {}, 5s);

    REQUIRE(ok.ok());
    CHECK(ok->status == 200);
    REQUIRE_FALSE(untrusted.ok());
    CHECK_THAT(untrusted.error().message, Catch::Contains("TLS handshake"));
    CHECK_FALSE(plain.ok());
}

TEST_CASE("with client_ca_file only clients with a certificate from that CA are served", "[tls]") {
    const auto& c = certificates();
    auto d = tls_daemon(c, true);
    const auto get = [&](const std::string& cert) {
        return http::send_request(
            "GET", https_url(*d, "/livez"), {}, {}, 5s,
            {c.crt("ca"), cert.empty() ? "" : c.crt(cert), cert.empty() ? "" : c.key(cert)});
    };

    auto with_client = get("client");
    auto without = get("");
    auto rogue = get("rogue");

    REQUIRE(with_client.ok());
    CHECK(with_client->status == 200);
    CHECK_FALSE(without.ok());
    CHECK_FALSE(rogue.ok());
}

TEST_CASE("runbookctl talks HTTPS with --ca-file, a client certificate and a token", "[tls][cli]") {
    const auto& c = certificates();
    test::TempDir dir;
    test::write_file(dir.file("tokens.yaml"), "principals:\n  - name: reader\n    sha256: " +
                                                  auth::secret_hash_hex("tls-secret") +
                                                  "\n    scopes: [read]\n");
    auto d = tls_daemon(c, true, dir.file("tokens.yaml"));
    const std::string url = https_url(*d, "");
    const auto ctl = [&](std::vector<std::string> extra) {
        std::vector<std::string> argv = {RUNBOOKCTL_BINARY, "--config", dir.file("none.yaml"),
                                         "--url",           url,        "--token",
                                         "tls-secret"};
        argv.insert(argv.end(), extra.begin(), extra.end());
        argv.insert(argv.end(), {"runs", "list"});
        return test::run_command(argv);
    };
    test::write_file(dir.file("none.yaml"), "");

    auto ok = ctl(
        {"--ca-file", c.crt("ca"), "--cert-file", c.crt("client"), "--key-file", c.key("client")});
    auto no_ca = ctl({"--cert-file", c.crt("client"), "--key-file", c.key("client")});

    INFO(ok.output);
    CHECK(ok.exit_code == 0);
    CHECK(no_ca.exit_code == 3);
    CHECK_THAT(no_ca.output, Catch::Contains("TLS handshake"));
}

TEST_CASE("runbookd refuses to start when a TLS file cannot be loaded, naming it", "[tls]") {
    test::TempDir dir;
    std::filesystem::create_directories(dir.path() / "runbooks");
    test::write_file(dir.file("runbookd.yaml"),
                     "http:\n  tls:\n    cert_file: missing.crt\n    key_file: missing.key\n");
    test::write_file(dir.file("half.yaml"), "http:\n  tls:\n    cert_file: a.crt\n");

    auto r = test::run_command({RUNBOOKD_BINARY, "--config", dir.file("runbookd.yaml"), "--listen",
                                "127.0.0.1:0", "--runbooks", dir.file("runbooks"), "--db",
                                dir.file("x.db")});
    auto half = test::run_command({RUNBOOKD_BINARY, "--config", dir.file("half.yaml")});

    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output,
               Catch::Contains("http.tls: cannot load cert_file " + dir.file("missing.crt")));
    CHECK(half.exit_code == 2);
    CHECK_THAT(half.output, Catch::Contains(dir.file("half.yaml") +
                                            ":3:5: http.tls: cert_file and key_file are both "
                                            "required"));
}
