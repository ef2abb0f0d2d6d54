#include <algorithm>
#include <cctype>
#include <cmath>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <re2/re2.h>

#include <runbookd/runbook.hpp>

namespace runbookd {

void sort_by_location(std::vector<Diagnostic>& diagnostics) {
    std::stable_sort(diagnostics.begin(), diagnostics.end(), [](const auto& a, const auto& b) {
        return std::tie(a.location.file, a.location.line, a.location.column) <
               std::tie(b.location.file, b.location.line, b.location.column);
    });
}

std::string SourceLocation::to_string() const {
    if (line <= 0) {
        return file;
    }
    return fmt::format("{}:{}:{}", file, line, column);
}

bool Runbook::matches_labels(const LabelSet& labels) const {
    return !matchers.empty() && matches_all(matchers, labels);
}

bool ApprovalSpec::allows(std::string_view actor) const {
    // An approver is named as the principal of the tokens file ("alice"), whose requests act as
    // "token:alice" (docs/auth.md).
    constexpr std::string_view kToken = "token:";
    const std::string_view principal =
        actor.substr(0, kToken.size()) == kToken ? actor.substr(kToken.size()) : actor;
    return approvers.empty() ||
           std::find(approvers.begin(), approvers.end(), actor) != approvers.end() ||
           std::find(approvers.begin(), approvers.end(), principal) != approvers.end();
}

std::optional<std::string> ParamSpec::check(std::string_view value) const {
    if (regex && !re2::RE2::FullMatch(re2::StringPiece(value.data(), value.size()), *regex)) {
        return fmt::format("does not match the pattern \"{}\"", pattern);
    }
    if (!choices.empty() && std::find(choices.begin(), choices.end(), value) == choices.end()) {
        return fmt::format("is not one of the choices: {}", fmt::join(choices, ", "));
    }
    return std::nullopt;
}

Result<LabelSet> Runbook::resolve_params(const LabelSet& given) const {
    for (const auto& [param, value] : given) {
        const auto spec = std::find_if(params.begin(), params.end(),
                                       [&param = param](const auto& p) { return p.name == param; });
        if (spec == params.end()) {
            return make_error(ErrorCode::InvalidArgument,
                              fmt::format("runbook {} has no parameter \"{}\"", name, param),
                              "params." + param);
        }
        if (spec->required && value.empty()) {
            return make_error(ErrorCode::InvalidArgument,
                              fmt::format("parameter {} is required and cannot be empty", param),
                              "params." + param);
        }
        if (auto why = spec->check(value)) {
            return make_error(ErrorCode::InvalidArgument,
                              fmt::format("parameter {}: the value \"{}\" {}", param, value, *why),
                              "params." + param);
        }
    }
    LabelSet out = given;
    for (const auto& p : params) {
        if (out.count(p.name) != 0) {
            continue;
        }
        if (p.default_value) {
            out.emplace(p.name, *p.default_value);
        } else if (p.required) {
            return make_error(ErrorCode::InvalidArgument,
                              fmt::format("parameter {} is required", p.name), "params." + p.name);
        }
    }
    return out;
}

LabelSet Runbook::default_params() const {
    LabelSet out;
    for (const auto& p : params) {
        if (p.default_value) {
            out.emplace(p.name, *p.default_value);
        }
    }
    return out;
}

bool Runbook::acts_on(AlertStatus status) const {
    return status == AlertStatus::Firing ? on_firing : on_resolved;
}

RunbookCatalog::RunbookCatalog(std::vector<std::shared_ptr<const Runbook>> runbooks)
    : runbooks_(std::move(runbooks)) {
    std::sort(runbooks_.begin(), runbooks_.end(),
              [](const auto& a, const auto& b) { return a->name < b->name; });
}

std::shared_ptr<const Runbook> RunbookCatalog::find(std::string_view name) const {
    const auto it = std::lower_bound(runbooks_.begin(), runbooks_.end(), name,
                                     [](const auto& r, std::string_view n) { return r->name < n; });
    if (it != runbooks_.end() && (*it)->name == name) {
        return *it;
    }
    return nullptr;
}

std::shared_ptr<const Runbook> RunbookCatalog::find_by_hash(std::string_view content_hash) const {
    for (const auto& r : runbooks_) {
        if (r->content_hash == content_hash) {
            return r;
        }
    }
    return nullptr;
}

Duration retry_delay(const RetryPolicy& policy, int next_attempt, double random01) {
    if (next_attempt < 2) {
        return Duration{0};
    }
    // Multiply step by step and stop at the cap: multiplier^98 (100 attempts) fits no integer.
    const auto cap = static_cast<double>(policy.max.count());
    double delay = std::min(static_cast<double>(policy.initial.count()), cap);
    for (int n = 2; n < next_attempt && delay < cap; ++n) {
        delay = std::min(delay * policy.multiplier, cap);
    }
    const double jitter = std::clamp(policy.jitter, 0.0, 1.0);
    const double draw = std::clamp(random01, 0.0, 1.0);
    delay *= 1.0 - jitter * draw;
    if (!std::isfinite(delay) || delay < 0.0) {
        return Duration{0};
    }
    return Duration{static_cast<Duration::rep>(std::llround(delay))};
}

std::optional<Duration> parse_duration(std::string_view text) {
    // A sequence of <integer><unit>, units ms, s, m, h, d; at least one.
    if (text.empty()) {
        return std::nullopt;
    }
    std::int64_t total_ms = 0;
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::int64_t number = 0;
        const std::size_t start = pos;
        while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos])) != 0) {
            number = number * 10 + (text[pos] - '0');
            if (number > 100'000'000'000) {
                return std::nullopt;
            }
            ++pos;
        }
        if (pos == start) {
            return std::nullopt;
        }
        std::int64_t unit_ms = 0;
        if (text.substr(pos, 2) == "ms") {
            unit_ms = 1;
            pos += 2;
        } else if (pos < text.size()) {
            switch (text[pos]) {
                case 's':
                    unit_ms = 1000;
                    break;
                case 'm':
                    unit_ms = 60'000;
                    break;
                case 'h':
                    unit_ms = 3'600'000;
                    break;
                case 'd':
                    unit_ms = 86'400'000;
                    break;
                default:
                    return std::nullopt;
            }
            ++pos;
        } else {
            return std::nullopt;
        }
        total_ms += number * unit_ms;
    }
    return Duration{total_ms};
}

std::string format_duration(Duration d) {
    std::int64_t ms = d.count();
    if (ms == 0) {
        return "0s";
    }
    std::string out;
    if (ms % 1000 != 0) {
        return fmt::format("{}ms", ms);
    }
    std::int64_t s = ms / 1000;
    if (s >= 3600) {
        out += fmt::format("{}h", s / 3600);
        s %= 3600;
    }
    if (s >= 60) {
        out += fmt::format("{}m", s / 60);
        s %= 60;
    }
    if (s > 0) {
        out += fmt::format("{}s", s);
    }
    return out;
}

}  // namespace runbookd
