#pragma once

#include <optional>
#include <string_view>

// What a route of the HTTP API requires of its caller (docs/auth.md). Plain values, so that the
// router can hold them without knowing how credentials are checked.
namespace runbookd::auth {

enum class Scope { Webhook, Read, Run, Approve, Admin };

constexpr std::string_view scope_name(Scope s) {
    switch (s) {
        case Scope::Webhook:
            return "webhook";
        case Scope::Read:
            return "read";
        case Scope::Run:
            return "run";
        case Scope::Approve:
            return "approve";
        case Scope::Admin:
            return "admin";
    }
    return "admin";
}

std::optional<Scope> parse_scope(std::string_view name);

// Either open to anyone (probes) or needing one scope. There is deliberately no default:
// every route says which it is where it is registered.
class Access {
  public:
    static Access open() { return Access(std::nullopt); }
    static Access scope(Scope s) { return Access(s); }

    bool is_open() const { return !scope_; }
    // Only when !is_open().
    Scope required() const { return *scope_; }

  private:
    explicit Access(std::optional<Scope> s) : scope_(s) {}
    std::optional<Scope> scope_;
};

}  // namespace runbookd::auth
