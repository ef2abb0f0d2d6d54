#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <runbookd/result.hpp>

#include "auth/access.hpp"
#include "http/message.hpp"

namespace runbookd {
class Store;
}

// Authentication and authorization of the HTTP API (docs/auth.md): principals from a tokens
// file, credentials checked in constant time, scopes per route, per-runbook allow-lists, and the
// audit of refusals.
namespace runbookd::auth {

using Digest = std::array<unsigned char, 32>;  // SHA-256

// One entry of the tokens file.
struct Principal {
    std::string name;
    std::string username;  // for HTTP Basic; empty: bearer only
    Digest digest{};       // SHA-256 of the secret
    std::vector<Scope> scopes;
    std::vector<std::string> runbooks;  // empty: every runbook

    bool has(Scope scope) const;
    // Whether run and approve requests may concern `runbook`.
    bool may_use(std::string_view runbook) const;
    // Whether an allow-list limits this principal at all (admin is never limited).
    bool limited() const;
};

using Principals = std::vector<std::shared_ptr<const Principal>>;

// Reads and checks a tokens file. Every problem is reported, one
// "file:line:column: message" per line of the error's message.
Result<Principals> load_tokens_file(const std::string& path);

// Who a request acts as, for everything it records: "token:NAME" once authenticated, else
// "http:ADDRESS" (runbookd without tokens).
std::string actor(const http::Request& request);

// A principal's name: 1 to 100 letters, digits, '_', '-', '.' and '@'.
bool valid_principal_name(std::string_view name);

// The lower-case hex SHA-256 of a secret, as the tokens file holds it.
std::string secret_hash_hex(std::string_view secret);

// A new random secret (256 bits, URL-safe) for `runbookctl token create`.
std::string generate_secret();

// True for 127.0.0.0/8 and ::1 (also as an IPv4-mapped IPv6 address).
bool is_loopback_host(std::string_view host);

// Checks requests against the principals in force. Disabled (everything allowed) when it holds
// no principals, which only happens when no tokens file is configured. Methods may be called
// from any thread; `set_principals` swaps the whole set at once.
class Authenticator {
  public:
    // `store` records auth.denied events; null records nothing (tests of parts).
    Authenticator(Principals principals, Store* store);

    void set_principals(Principals principals);

    // The router's guard (http::Router::Guard): 401 or 403, or nullopt after setting
    // request.principal.
    std::optional<http::Response> check(const Access& access, std::string_view route,
                                        http::Request& request);

    // For handlers of run and approve requests once they know the runbook concerned: 403 when
    // the principal's allow-list does not hold it (recorded like any refusal), else nullopt.
    std::optional<http::Response> check_runbook(const http::Request& request, Scope scope,
                                                std::string_view runbook);

  private:
    enum class Reason { MissingCredentials, BadCredentials, MissingScope, RunbookNotAllowed };
    struct Denial {
        Reason reason;
        std::string_view route;
        std::string_view scheme;
        const Principal* principal = nullptr;
    };

    http::Response deny(const http::Request& request, const Denial& denial, std::string message);
    // Whether this denial may be recorded (token bucket); `unrecorded` gets the denials left
    // out since the last recorded one.
    bool take_record_slot(std::uint64_t& unrecorded);

    Store* store_;
    mutable std::mutex mutex_;
    std::shared_ptr<const Principals> principals_;
    // Rate limit of auth.denied events and log lines, guarded by mutex_.
    double bucket_ = 0;
    std::chrono::steady_clock::time_point refilled_;
    std::uint64_t unrecorded_ = 0;
};

}  // namespace runbookd::auth
