#include "auth/auth.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <set>

#include <arpa/inet.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <yaml-cpp/yaml.h>

#include <runbookd/step_parser.hpp>
#include <runbookd/store.hpp>

#include "common/log.hpp"
#include "common/yaml_file.hpp"
#include "metrics/runbookd_metrics.hpp"

namespace runbookd::auth {
namespace {

constexpr std::size_t kMaxNameBytes = 100;
// auth.denied events: a burst of kBucketSize, then kRefillPerSecond (docs/auth.md).
constexpr double kBucketSize = 20;
constexpr double kRefillPerSecond = 2;
constexpr std::string_view kChallenge = R"(Bearer realm="runbookd", Basic realm="runbookd")";

Digest sha256(std::string_view data) {
    Digest out{};
    unsigned int size = 0;
    EVP_Digest(data.data(), data.size(), out.data(), &size, EVP_sha256(), nullptr);
    return out;
}

std::optional<Digest> parse_hex_digest(std::string_view hex) {
    if (hex.size() != 64) {
        return std::nullopt;
    }
    Digest out{};
    for (std::size_t i = 0; i < 32; ++i) {
        unsigned value = 0;
        for (const char c : hex.substr(i * 2, 2)) {
            const int lower = std::tolower(static_cast<unsigned char>(c));
            if (lower >= '0' && lower <= '9') {
                value = value * 16 + static_cast<unsigned>(lower - '0');
            } else if (lower >= 'a' && lower <= 'f') {
                value = value * 16 + static_cast<unsigned>(lower - 'a' + 10);
            } else {
                return std::nullopt;
            }
        }
        out[i] = static_cast<unsigned char>(value);
    }
    return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
    std::string out;
    unsigned buffer = 0;
    int bits = 0;
    std::size_t padding = 0;
    for (const char c : text) {
        int value = -1;
        if (c >= 'A' && c <= 'Z') {
            value = c - 'A';
        } else if (c >= 'a' && c <= 'z') {
            value = c - 'a' + 26;
        } else if (c >= '0' && c <= '9') {
            value = c - '0' + 52;
        } else if (c == '+') {
            value = 62;
        } else if (c == '/') {
            value = 63;
        } else if (c == '=') {
            ++padding;
            continue;
        }
        if (value < 0 || padding > 0) {
            return std::nullopt;
        }
        buffer = (buffer << 6) | static_cast<unsigned>(value);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((buffer >> bits) & 0xff);
        }
    }
    if (padding > 2 || (text.size() % 4 != 0 && padding > 0)) {
        return std::nullopt;
    }
    return out;
}

}  // namespace

bool valid_principal_name(std::string_view name) {
    return !name.empty() && name.size() <= kMaxNameBytes &&
           std::all_of(name.begin(), name.end(), [](char c) {
               return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-' ||
                      c == '.' || c == '@';
           });
}

std::string secret_hash_hex(std::string_view secret) {
    const Digest d = sha256(secret);
    std::string out;
    for (const unsigned char b : d) {
        out += fmt::format("{:02x}", b);
    }
    return out;
}

namespace {

// A list of strings; an error for anything else or an empty list.
std::optional<std::vector<std::string>> string_list(ParseContext& ctx, const YAML::Node& node,
                                                    const std::string& what) {
    if (!node.IsSequence() || node.size() == 0) {
        ctx.error(node, fmt::format("{}: expected a non-empty list", what));
        return std::nullopt;
    }
    std::vector<std::string> out;
    for (const auto& item : node) {
        auto value = ctx.string(item, what);
        if (!value) {
            return std::nullopt;
        }
        out.push_back(*value);
    }
    return out;
}

// Names, user names and hashes must each be unique across the file.
struct Seen {
    std::set<std::string> names, usernames;
    std::set<Digest> digests;
};

std::optional<Principal> read_principal(ParseContext& ctx, const YAML::Node& node,
                                        std::size_t index, Seen& seen) {
    const std::string what = fmt::format("principals[{}]", index);
    if (!ctx.check_mapping(node, what, {"name", "sha256", "scopes", "runbooks", "username"})) {
        return std::nullopt;
    }
    for (const char* key : {"name", "sha256", "scopes"}) {
        if (!find_key(node, key).IsDefined()) {
            ctx.error(node, fmt::format("{}: missing key \"{}\"", what, key));
            return std::nullopt;
        }
    }
    Principal p;
    const YAML::Node name = find_key(node, "name");
    auto text = ctx.string(name, what + ".name");
    if (!text) {
        return std::nullopt;
    }
    p.name = *text;
    if (!valid_principal_name(p.name)) {
        ctx.error(name, fmt::format("{}.name: \"{}\" is not a valid name (1 to {} letters, "
                                    "digits, _, -, . and @)",
                                    what, p.name, kMaxNameBytes));
    } else if (!seen.names.insert(p.name).second) {
        ctx.error(name, fmt::format("{}.name: \"{}\" is listed twice", what, p.name));
    }

    const YAML::Node hash = find_key(node, "sha256");
    if (auto hex = ctx.string(hash, what + ".sha256")) {
        if (auto digest = parse_hex_digest(*hex)) {
            p.digest = *digest;
            if (!seen.digests.insert(p.digest).second) {
                ctx.error(hash, fmt::format("{}.sha256: another principal has the same secret; "
                                            "a bearer token must name one principal",
                                            what));
            }
        } else {
            ctx.error(hash, fmt::format("{}.sha256: expected the 64 hex digits of the secret's "
                                        "SHA-256 (runbookctl token create prints it)",
                                        what));
        }
    }

    const YAML::Node scopes = find_key(node, "scopes");
    if (auto names = string_list(ctx, scopes, what + ".scopes")) {
        std::size_t i = 0;
        for (const auto& s : *names) {
            if (auto scope = parse_scope(s)) {
                p.scopes.push_back(*scope);
            } else {
                ctx.error(scopes[i], fmt::format("{}.scopes: unknown scope \"{}\" (expected "
                                                 "webhook, read, run, approve or admin)",
                                                 what, s));
            }
            ++i;
        }
    }
    if (const YAML::Node runbooks = find_key(node, "runbooks"); runbooks.IsDefined()) {
        if (auto names = string_list(ctx, runbooks, what + ".runbooks")) {
            p.runbooks = std::move(*names);
        }
    }
    if (const YAML::Node user = find_key(node, "username"); user.IsDefined()) {
        if (auto u = ctx.string(user, what + ".username")) {
            if (u->empty() || u->find(':') != std::string::npos) {
                ctx.error(user, fmt::format("{}.username: must be non-empty and hold no ':' "
                                            "(HTTP Basic separates it from the password with ':')",
                                            what));
            } else if (!seen.usernames.insert(*u).second) {
                ctx.error(user, fmt::format("{}.username: \"{}\" is listed twice", what, *u));
            }
            p.username = *u;
        }
    }
    return p;
}

std::string joined_diagnostics(ParseContext& ctx) {
    auto& diagnostics = ctx.diagnostics();
    sort_by_location(diagnostics);
    std::string message;
    for (const auto& d : diagnostics) {
        message += (message.empty() ? "" : "\n") + d.to_string();
    }
    return message;
}

// What an Authorization header presents; `error` says why it presents nothing usable.
struct Credentials {
    std::string_view scheme;  // "bearer", "basic" or empty
    std::string username;     // Basic only
    std::string secret;
    std::string error;
};

Credentials parse_credentials(std::string_view header) {
    const auto space = header.find(' ');
    std::string scheme(header.substr(0, std::min(space, header.size())));
    std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                   [](char c) { return static_cast<char>(std::tolower(c)); });
    std::string_view value = space == std::string_view::npos ? "" : header.substr(space + 1);
    while (!value.empty() && value.front() == ' ') {
        value.remove_prefix(1);
    }
    Credentials out;
    if (scheme == "bearer" && !value.empty()) {
        out.scheme = "bearer";
        out.secret = std::string(value);
        return out;
    }
    if (scheme != "basic") {
        out.error = "credentials required: send Authorization: Bearer SECRET or HTTP Basic auth";
        return out;
    }
    out.scheme = "basic";
    const auto decoded = base64_decode(value);
    const auto colon = decoded ? decoded->find(':') : std::string::npos;
    if (colon == std::string::npos) {
        out.error = "malformed Basic credentials: expected base64 of USERNAME:SECRET";
        return out;
    }
    out.username = decoded->substr(0, colon);
    out.secret = decoded->substr(colon + 1);
    return out;
}

// Every principal is compared, with no early exit, so that timing tells nothing about which
// one was close. Basic also needs the principal's user name.
std::shared_ptr<const Principal> find_principal(const Principals& principals,
                                                const Credentials& presented) {
    const Digest digest = sha256(presented.secret);
    std::shared_ptr<const Principal> found;
    for (const auto& p : principals) {
        const bool same = CRYPTO_memcmp(digest.data(), p->digest.data(), digest.size()) == 0;
        const bool user_ok = presented.scheme == "bearer" ||
                             (!p->username.empty() && p->username == presented.username);
        if (same && user_ok) {
            found = p;
        }
    }
    return found;
}

std::string_view reason_name(int reason) {
    constexpr std::array kNames = {"missing_credentials", "bad_credentials", "missing_scope",
                                   "runbook_not_allowed"};
    return kNames.at(static_cast<std::size_t>(reason));
}

}  // namespace

std::optional<Scope> parse_scope(std::string_view name) {
    for (const auto s : {Scope::Webhook, Scope::Read, Scope::Run, Scope::Approve, Scope::Admin}) {
        if (scope_name(s) == name) {
            return s;
        }
    }
    return std::nullopt;
}

bool Principal::has(Scope scope) const {
    return std::any_of(scopes.begin(), scopes.end(), [scope](Scope held) {
        // run and approve imply read; admin implies everything (docs/auth.md, Scopes).
        return held == scope || held == Scope::Admin ||
               (scope == Scope::Read && (held == Scope::Run || held == Scope::Approve));
    });
}

bool Principal::limited() const {
    return !runbooks.empty() &&
           std::find(scopes.begin(), scopes.end(), Scope::Admin) == scopes.end();
}

bool Principal::may_use(std::string_view runbook) const {
    return !limited() || std::find(runbooks.begin(), runbooks.end(), runbook) != runbooks.end();
}

Result<Principals> load_tokens_file(const std::string& path) {
    auto file = load_yaml_file(path, "tokens file");
    if (!file) {
        return make_error(ErrorCode::InvalidArgument, file.error().message);
    }
    const YAML::Node& root = file->root;
    ParseContext ctx(path, file->text);
    Principals out;
    if (!root.IsMap()) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("{}:1:1: expected a mapping with the key principals", path));
    }
    if (ctx.check_mapping(root, "tokens file", {"principals"})) {
        const YAML::Node list = find_key(root, "principals");
        if (!list.IsSequence() || list.size() == 0) {
            ctx.error(list.IsDefined() ? list : root,
                      "principals: expected a non-empty list of principals");
        } else {
            Seen seen;
            for (std::size_t i = 0; i < list.size(); ++i) {
                if (auto p = read_principal(ctx, list[i], i, seen)) {
                    out.push_back(std::make_shared<const Principal>(std::move(*p)));
                }
            }
        }
    }
    if (ctx.failed()) {
        return make_error(ErrorCode::InvalidArgument, joined_diagnostics(ctx));
    }
    return out;
}

std::string actor(const http::Request& request) {
    if (request.principal) {
        return "token:" + request.principal->name;
    }
    return "http:" + request.remote_addr;
}

std::string generate_secret() {
    std::array<unsigned char, 32> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
        return {};
    }
    constexpr std::string_view kAlphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // The prefix lets secret scanners and people recognise what the string is.
    std::string out = "rbd_";
    unsigned buffer = 0;
    int bits = 0;
    for (const unsigned char b : bytes) {
        buffer = (buffer << 8) | b;
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out += kAlphabet[(buffer >> bits) & 0x3f];
        }
    }
    if (bits > 0) {
        out += kAlphabet[(buffer << (6 - bits)) & 0x3f];
    }
    return out;
}

bool is_loopback_host(std::string_view host) {
    const std::string h(host);
    unsigned char v4[4];
    if (inet_pton(AF_INET, h.c_str(), v4) == 1) {
        return v4[0] == 127;
    }
    unsigned char v6[16];
    if (inet_pton(AF_INET6, h.c_str(), v6) != 1) {
        return false;
    }
    static constexpr unsigned char kLoopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::memcmp(v6, kLoopback, 16) == 0 ||
           (std::memcmp(v6, kMapped, 12) == 0 && v6[12] == 127);
}

Authenticator::Authenticator(Principals principals, Store* store)
    : store_(store),
      principals_(std::make_shared<const Principals>(std::move(principals))),
      bucket_(kBucketSize),
      refilled_(std::chrono::steady_clock::now()) {}

void Authenticator::set_principals(Principals principals) {
    auto next = std::make_shared<const Principals>(std::move(principals));
    std::lock_guard lock(mutex_);
    principals_ = std::move(next);
}

std::optional<http::Response> Authenticator::check(const Access& access, std::string_view route,
                                                   http::Request& request) {
    std::shared_ptr<const Principals> principals;
    {
        std::lock_guard lock(mutex_);
        principals = principals_;
    }
    if (principals->empty() || access.is_open()) {
        return std::nullopt;
    }
    const auto presented = parse_credentials(request.header("authorization"));
    if (!presented.error.empty()) {
        return deny(request, {Reason::MissingCredentials, route, presented.scheme, nullptr},
                    presented.error);
    }
    auto found = find_principal(*principals, presented);
    if (!found) {
        return deny(request, {Reason::BadCredentials, route, presented.scheme, nullptr},
                    "the credentials are not valid");
    }
    if (!found->has(access.required())) {
        return deny(request, {Reason::MissingScope, route, presented.scheme, found.get()},
                    fmt::format("{} needs the {} scope, which token:{} does not have", route,
                                scope_name(access.required()), found->name));
    }
    request.principal = std::move(found);
    return std::nullopt;
}

std::optional<http::Response> Authenticator::check_runbook(const http::Request& request,
                                                           Scope scope, std::string_view runbook) {
    if (!request.principal || request.principal->may_use(runbook)) {
        return std::nullopt;
    }
    return deny(request, {Reason::RunbookNotAllowed, request.route, "", request.principal.get()},
                fmt::format("token:{} may not {} runbook \"{}\" (not in its runbooks list)",
                            request.principal->name, scope_name(scope), runbook));
}

bool Authenticator::take_record_slot(std::uint64_t& unrecorded) {
    std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - refilled_).count();
    refilled_ = now;
    bucket_ = std::min(kBucketSize, bucket_ + elapsed * kRefillPerSecond);
    if (bucket_ < 1) {
        ++unrecorded_;
        return false;
    }
    bucket_ -= 1;
    unrecorded = unrecorded_;
    unrecorded_ = 0;
    return true;
}

http::Response Authenticator::deny(const http::Request& request, const Denial& denial,
                                   std::string message) {
    const bool unauthenticated =
        denial.reason == Reason::MissingCredentials || denial.reason == Reason::BadCredentials;
    const unsigned status = unauthenticated ? 401 : 403;
    const auto reason = reason_name(static_cast<int>(denial.reason));
    auto& m = metrics::runbookd_metrics();
    m.auth_denied(static_cast<std::size_t>(denial.reason));

    std::uint64_t unrecorded = 0;
    if (take_record_slot(unrecorded)) {
        const std::string principal = denial.principal ? denial.principal->name : "";
        log::get("http")->warn(
            "request denied status={} reason={} method={} route={} principal={} remote={}", status,
            reason, log::quote(request.method), log::quote(denial.route), log::quote(principal),
            log::quote(request.remote_addr));
        if (store_ != nullptr) {
            nlohmann::json detail = {{"status", status},
                                     {"reason", reason},
                                     {"method", request.method},
                                     {"route", denial.route},
                                     {"principal", principal},
                                     {"scheme", denial.scheme},
                                     {"remote_addr", request.remote_addr}};
            if (unrecorded > 0) {
                detail["unrecorded"] = unrecorded;
            }
            store_->record_event("auth.denied", detail.dump(), [](Status s) {
                if (!s) {
                    log::get("http")->warn("auth.denied not recorded error={}",
                                           log::quote(s.error().message));
                }
            });
        }
    } else {
        m.auth_denied_unrecorded();
    }

    auto response = http::json_error(
        status, unauthenticated ? "unauthenticated" : "permission_denied", message);
    if (unauthenticated) {
        response.headers.emplace_back("WWW-Authenticate", std::string(kChallenge));
    }
    return response;
}

}  // namespace runbookd::auth
