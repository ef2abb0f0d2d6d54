#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <re2/re2.h>

#include <runbookd/argv_step.hpp>
#include <runbookd/step_parser.hpp>

#include "common/hash.hpp"

namespace runbookd {
namespace {

constexpr std::size_t kMaxNameLength = 128;
constexpr std::uintmax_t kMaxFileSize = 1024 * 1024;
constexpr int kMaxAttempts = 100;
constexpr int kMaxConcurrency = 10'000;
constexpr Duration kMaxApprovalTimeout{7LL * 24 * 3600 * 1000};
constexpr std::size_t kMaxApprovers = 100;

// Runbook and step names appear in URLs, environment variables and placeholders.
bool valid_name(std::string_view name) {
    if (name.empty() || name.size() > kMaxNameLength) {
        return false;
    }
    const auto ok = [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
    };
    return std::isalnum(static_cast<unsigned char>(name.front())) != 0 &&
           std::all_of(name.begin(), name.end(), ok);
}

const char* node_kind(const YAML::Node& node) {
    switch (node.Type()) {
        case YAML::NodeType::Null:
            return "nothing";
        case YAML::NodeType::Scalar:
            return "a scalar";
        case YAML::NodeType::Sequence:
            return "a list";
        case YAML::NodeType::Map:
            return "a mapping";
        case YAML::NodeType::Undefined:
            return "nothing";
    }
    return "nothing";
}

// Line `index` (0-based) of `text`, without its newline; empty past the end.
std::string_view text_line(std::string_view text, std::size_t index) {
    std::size_t begin = 0;
    for (; index > 0; --index) {
        begin = text.find('\n', begin);
        if (begin == std::string_view::npos) {
            return {};
        }
        ++begin;
    }
    return text.substr(begin, text.find('\n', begin) - begin);
}

void parse_name(const YAML::Node& root, ParseContext& ctx, const char* what, std::string& out) {
    const YAML::Node node = find_key(root, "name");
    if (!node.IsDefined()) {
        ctx.error(root, fmt::format("{} needs a name", what));
        return;
    }
    if (auto name = ctx.string(node, "name")) {
        if (!valid_name(*name)) {
            ctx.error(node, fmt::format("{} name \"{}\" is not valid: use letters, digits, '-' "
                                        "and '_', starting with a letter or digit, at most {} "
                                        "characters",
                                        what, *name, kMaxNameLength));
            return;
        }
        out = std::move(*name);
    }
}

void parse_matchers(const YAML::Node& node, ParseContext& ctx, Runbook& runbook) {
    if (!node.IsDefined() || node.IsNull()) {
        return;
    }
    if (!node.IsSequence()) {
        ctx.error(node, fmt::format("matchers: expected a list of matcher strings, got {}",
                                    node_kind(node)));
        return;
    }
    for (const auto& item : node) {
        auto text = ctx.string(item, "matcher");
        if (!text) {
            continue;
        }
        auto parsed = Matcher::parse_list(*text);
        if (!parsed) {
            ctx.error(item, parsed.error().message);
            continue;
        }
        for (auto& m : *parsed) {
            runbook.matchers.push_back(std::move(m));
        }
    }
}

void parse_on(const YAML::Node& node, ParseContext& ctx, Runbook& runbook) {
    if (!node.IsDefined()) {
        return;
    }
    std::vector<YAML::Node> items;
    if (node.IsScalar()) {
        items.push_back(node);
    } else if (node.IsSequence() && node.size() > 0) {
        for (const auto& item : node) {
            items.push_back(item);
        }
    } else {
        ctx.error(node, "on: expected a list of alert statuses (firing, resolved)");
        return;
    }
    runbook.on_firing = false;
    runbook.on_resolved = false;
    for (const auto& item : items) {
        auto text = ctx.string(item, "on");
        if (!text) {
            continue;
        }
        const auto status = parse_alert_status(*text);
        if (!status) {
            ctx.error(item, fmt::format("on: unknown alert status \"{}\" (expected firing or "
                                        "resolved)",
                                        *text));
            continue;
        }
        (*status == AlertStatus::Firing ? runbook.on_firing : runbook.on_resolved) = true;
    }
}

// The delay keys of `retries:`; initial and max are checked together.
void parse_retry_delays(const YAML::Node& node, ParseContext& ctx, RetryPolicy& retry) {
    const YAML::Node initial = find_key(node, "initial");
    const YAML::Node max = find_key(node, "max");
    if (initial.IsDefined()) {
        retry.initial = ctx.duration(initial, "retries.initial").value_or(retry.initial);
    }
    if (max.IsDefined()) {
        retry.max = ctx.duration(max, "retries.max").value_or(retry.max);
    }
    if (retry.initial > retry.max) {
        ctx.error(initial.IsDefined() ? initial : max,
                  fmt::format("retries: initial {} is longer than max {}",
                              format_duration(retry.initial), format_duration(retry.max)));
    }
    if (const auto m = find_key(node, "multiplier"); m.IsDefined()) {
        const auto value = ctx.number(m, "retries.multiplier");
        if (value && *value < 1.0) {
            ctx.error(m, fmt::format("retries.multiplier: must be at least 1, got {}", m.Scalar()));
        } else if (value) {
            retry.multiplier = *value;
        }
    }
    if (const auto j = find_key(node, "jitter"); j.IsDefined()) {
        const auto value = ctx.number(j, "retries.jitter");
        if (value && (*value < 0.0 || *value > 1.0)) {
            ctx.error(j, fmt::format("retries.jitter: must be from 0 to 1, got {}", j.Scalar()));
        } else if (value) {
            retry.jitter = *value;
        }
    }
}

// `retries: 3` or `retries: {attempts: 3, initial: 2s, max: 1m, multiplier: 2, jitter: 0.2}`.
void parse_retries(const YAML::Node& node, ParseContext& ctx, RetryPolicy& retry) {
    if (node.IsScalar()) {
        if (const auto n = ctx.integer(node, "retries", 1, kMaxAttempts)) {
            retry.attempts = static_cast<int>(*n);
        }
        return;
    }
    if (!node.IsMap()) {
        ctx.error(node, fmt::format("retries: expected a number of attempts or a mapping "
                                    "(attempts, initial, max, multiplier, jitter), got {}",
                                    node_kind(node)));
        return;
    }
    ctx.check_mapping(node, "retries", {"attempts", "initial", "max", "multiplier", "jitter"});
    if (const auto a = find_key(node, "attempts"); !a.IsDefined()) {
        ctx.error(node, "retries: needs attempts, the total number of attempts (e.g. attempts: 3)");
    } else if (const auto n = ctx.integer(a, "retries.attempts", 1, kMaxAttempts)) {
        retry.attempts = static_cast<int>(*n);
    }
    parse_retry_delays(node, ctx, retry);
}

// One `retry_on` condition: failure, timeout, signal or an exit code.
void parse_retry_condition(const YAML::Node& item, ParseContext& ctx, RetryPolicy& retry) {
    const auto text = ctx.string(item, "retry_on");
    if (!text) {
        return;
    }
    bool* flag = nullptr;
    if (*text == "failure") {
        flag = &retry.on_any_exit_code;
    } else if (*text == "timeout") {
        flag = &retry.on_timeout;
    } else if (*text == "signal") {
        flag = &retry.on_signal;
    }
    if (flag != nullptr) {
        if (*flag) {
            ctx.error(item, fmt::format("retry_on: \"{}\" is listed twice", *text));
        }
        *flag = true;
        return;
    }
    int code = 0;
    const char* end = text->data() + text->size();
    const auto [ptr, ec] = std::from_chars(text->data(), end, code);
    if (text->empty() || ptr != end ||
        (ec != std::errc{} && ec != std::errc::result_out_of_range)) {
        ctx.error(item, fmt::format("retry_on: unknown condition \"{}\" (expected failure, "
                                    "timeout, signal or an exit code from 1 to 255)",
                                    *text));
        return;
    }
    if (ec == std::errc::result_out_of_range || code < 1 || code > 255) {
        ctx.error(item, fmt::format("retry_on: exit code {} is not from 1 to 255", *text));
        return;
    }
    auto& codes = retry.on_exit_codes;
    if (std::find(codes.begin(), codes.end(), code) != codes.end()) {
        ctx.error(item, fmt::format("retry_on: \"{}\" is listed twice", *text));
        return;
    }
    codes.push_back(code);
}

// `retry_on: [failure, timeout, signal, 75]`: one condition or a list of them.
void parse_retry_on(const YAML::Node& node, ParseContext& ctx, RetryPolicy& retry) {
    if (node.IsScalar()) {
        parse_retry_condition(node, ctx, retry);
        return;
    }
    if (!node.IsSequence() || node.size() == 0) {
        ctx.error(node,
                  "retry_on: expected a list of conditions: failure, timeout, signal or "
                  "exit codes from 1 to 255");
        return;
    }
    for (const auto& item : node) {
        parse_retry_condition(item, ctx, retry);
    }
}

// The step keys `retries` and `retry_on`, common to every kind.
void parse_retry(const YAML::Node& step, ParseContext& ctx, RetryPolicy& retry) {
    const std::size_t errors_before = ctx.diagnostics().size();
    if (const auto r = find_key(step, "retries"); r.IsDefined()) {
        parse_retries(r, ctx, retry);
    }
    const bool retries_ok = ctx.diagnostics().size() == errors_before;
    const YAML::Node retry_on = find_key(step, "retry_on");
    if (!retry_on.IsDefined()) {
        retry.on_any_exit_code = retry.attempts > 1;
        retry.on_timeout = retry.attempts > 1;
        return;
    }
    parse_retry_on(retry_on, ctx, retry);
    if (retries_ok && retry.attempts == 1) {
        ctx.warning(retry_on,
                    "retry_on has no effect without retries of 2 or more attempts (add e.g. "
                    "retries: 3)");
    }
}

void parse_approvers(const YAML::Node& node, ParseContext& ctx, ApprovalSpec& approval) {
    if (node.IsNull()) {
        return;
    }
    if (!node.IsSequence() || node.size() > kMaxApprovers) {
        ctx.error(node, fmt::format("approval.approvers: expected a list of at most {} names",
                                    kMaxApprovers));
        return;
    }
    for (const auto& item : node) {
        auto name = ctx.string(item, "approval.approvers");
        if (name && name->empty()) {
            ctx.error(item, "approval.approvers: a name must not be empty");
        } else if (name) {
            approval.approvers.push_back(std::move(*name));
        }
    }
}

// `approval: {approvers: [alice], timeout: 30m, on_timeout: deny, message: "..."}`
// (docs/approvals.md).
std::optional<ApprovalSpec> parse_approval(const YAML::Node& node, ParseContext& ctx) {
    ApprovalSpec approval;
    approval.location = ctx.location(node);
    if (node.IsNull()) {
        return approval;
    }
    if (!node.IsMap()) {
        ctx.error(node, fmt::format("approval: expected a mapping such as {{approvers: [alice], "
                                    "timeout: 30m, on_timeout: deny}}, got {}",
                                    node_kind(node)));
        return std::nullopt;
    }
    ctx.check_mapping(node, "approval", {"approvers", "timeout", "on_timeout", "message"});
    if (const auto a = find_key(node, "approvers"); a.IsDefined()) {
        parse_approvers(a, ctx, approval);
    }
    if (const auto t = find_key(node, "timeout"); t.IsDefined()) {
        const auto d = ctx.duration(t, "approval.timeout");
        if (d && (d->count() <= 0 || *d > kMaxApprovalTimeout)) {
            ctx.error(t, "approval.timeout: must be more than 0 and at most 7d (168h)");
        } else if (d) {
            approval.timeout = *d;
        }
    }
    if (const auto o = find_key(node, "on_timeout"); o.IsDefined()) {
        if (const auto c = ctx.choice(o, "approval.on_timeout", {"deny", "approve"})) {
            approval.approve_on_timeout = *c == 1;
        }
    }
    if (const auto m = find_key(node, "message"); m.IsDefined()) {
        approval.message = ctx.string(m, "approval.message").value_or("");
    }
    return approval;
}

std::optional<StepSpec> parse_step(const YAML::Node& node, ParseContext& ctx,
                                   const StepParsers& parsers) {
    if (!node.IsMap()) {
        ctx.error(node, fmt::format("step: expected a mapping, got {}", node_kind(node)));
        return std::nullopt;
    }
    StepSpec step;
    step.location = ctx.location(node);

    // Which kind is it? Exactly one kind key must be present.
    std::vector<std::string_view> kinds;
    const StepParser* parser = nullptr;
    for (const auto& p : parsers) {
        kinds.push_back(p->kind());
        if (find_key(node, p->kind()).IsDefined()) {
            if (parser != nullptr) {
                ctx.error(node, fmt::format("step has both {}: and {}: (a step has exactly one "
                                            "kind)",
                                            parser->kind(), p->kind()));
                return std::nullopt;
            }
            parser = p.get();
        }
    }
    std::vector<std::string_view> allowed = {"name",     "description", "timeout", "retries",
                                             "retry_on", "idempotent",  "approval"};
    if (parser == nullptr) {
        ctx.check_mapping(node, "step", allowed);
        ctx.error(node, fmt::format("step needs one key that gives its kind: {}",
                                    fmt::join(kinds, ", ")));
        return std::nullopt;
    }
    allowed.push_back(parser->kind());
    for (const auto key : parser->keys()) {
        allowed.push_back(key);
    }
    const bool keys_ok = ctx.check_mapping(node, "step", allowed);

    parse_name(node, ctx, "step", step.name);
    step.kind = std::string(parser->kind());
    if (const auto d = find_key(node, "description"); d.IsDefined()) {
        step.description = ctx.string(d, "description").value_or("");
    }
    if (const auto t = find_key(node, "timeout"); t.IsDefined()) {
        step.timeout = ctx.duration(t, "timeout");
    }
    parse_retry(node, ctx, step.retry);
    if (const auto i = find_key(node, "idempotent"); i.IsDefined()) {
        step.idempotent = ctx.boolean(i, "idempotent").value_or(false);
    }
    if (const auto a = find_key(node, "approval"); a.IsDefined()) {
        step.approval = parse_approval(a, ctx);
    }
    step.config = parser->parse(node, ctx);
    if (!keys_ok || step.config == nullptr) {
        return std::nullopt;
    }
    return step;
}

void parse_steps(const YAML::Node& node, ParseContext& ctx, const StepParsers& parsers,
                 Runbook& runbook) {
    if (!node.IsDefined()) {
        return;
    }
    if (!node.IsSequence() || node.size() == 0) {
        ctx.error(node, "steps: expected a non-empty list of steps");
        return;
    }
    std::map<std::string, SourceLocation> seen;
    std::vector<std::string> earlier;
    for (const auto& item : node) {
        ctx.set_earlier_steps(&earlier);
        auto step = parse_step(item, ctx, parsers);
        ctx.set_earlier_steps(nullptr);
        // A step that failed to parse still counts as earlier: later references to it are
        // not errors of their own.
        if (const auto name = item.IsMap() ? find_key(item, "name") : YAML::Node();
            name.IsDefined() && name.IsScalar()) {
            earlier.push_back(name.Scalar());
        }
        if (!step) {
            continue;
        }
        // A step without a name has been reported already; it duplicates nothing.
        const auto [it, inserted] = seen.emplace(step->name, step->location);
        if (!inserted && !step->name.empty()) {
            ctx.error(find_key(item, "name"),
                      fmt::format("duplicate step name \"{}\" (first at line {})", step->name,
                                  it->second.line));
            continue;
        }
        runbook.steps.push_back(std::move(*step));
    }
}

bool valid_param_name(std::string_view name) {
    static const re2::RE2 grammar("[A-Za-z_][A-Za-z0-9_-]{0,127}");
    return re2::RE2::FullMatch(re2::StringPiece(name.data(), name.size()), grammar);
}

std::optional<ParamSpec> parse_param(const YAML::Node& key, const YAML::Node& node,
                                     ParseContext& ctx) {
    ParamSpec p;
    p.name = key.Scalar();
    p.location = ctx.location(key);
    if (!valid_param_name(p.name)) {
        ctx.error(key, fmt::format("parameter name \"{}\" is not valid: use letters, digits, "
                                   "'-' and '_', starting with a letter or '_'",
                                   p.name));
        return std::nullopt;
    }
    if (node.IsNull()) {
        return p;  // `name:` alone: an optional parameter without default
    }
    const std::string what = "params." + p.name;
    if (!ctx.check_mapping(node, what,
                           {"description", "required", "default", "pattern", "choices"})) {
        return std::nullopt;
    }
    if (const auto d = find_key(node, "description"); d.IsDefined()) {
        p.description = ctx.string(d, what + ".description").value_or("");
    }
    if (const auto r = find_key(node, "required"); r.IsDefined()) {
        p.required = ctx.boolean(r, what + ".required").value_or(false);
    }
    if (const auto d = find_key(node, "default"); d.IsDefined()) {
        p.default_value = ctx.string(d, what + ".default");
    }
    if (const auto pat = find_key(node, "pattern"); pat.IsDefined()) {
        if (auto text = ctx.string(pat, what + ".pattern")) {
            re2::RE2::Options options;
            options.set_log_errors(false);
            auto regex = std::make_shared<re2::RE2>(*text, options);
            if (!regex->ok()) {
                ctx.error(pat, fmt::format("{}.pattern: bad regular expression: {}", what,
                                           regex->error()));
                return std::nullopt;
            }
            p.pattern = std::move(*text);
            p.regex = std::move(regex);
        }
    }
    if (const auto c = find_key(node, "choices"); c.IsDefined()) {
        if (!c.IsSequence() || c.size() == 0) {
            ctx.error(c, fmt::format("{}.choices: expected a non-empty list of strings", what));
            return std::nullopt;
        }
        for (const auto& item : c) {
            if (auto choice = ctx.string(item, what + ".choices")) {
                p.choices.push_back(std::move(*choice));
            }
        }
    }
    if (p.default_value) {
        if (auto why = p.check(*p.default_value)) {
            ctx.error(find_key(node, "default"),
                      fmt::format("{}.default: \"{}\" {}", what, *p.default_value, *why));
            return std::nullopt;
        }
    }
    return p;
}

void parse_params(const YAML::Node& node, ParseContext& ctx, Runbook& runbook) {
    if (!node.IsDefined()) {
        return;
    }
    if (!node.IsMap()) {
        ctx.error(node, "params: expected a mapping of parameter names to their declarations");
        return;
    }
    std::map<std::string, std::string> env_names;  // RUNBOOK_PARAM_ suffix → parameter
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
        const YAML::Node key = it->first;
        if (!key.IsScalar()) {
            ctx.error(key, "params: names must be strings");
            continue;
        }
        if (!seen.insert(key.Scalar()).second) {
            ctx.error(key, fmt::format("duplicate parameter \"{}\"", key.Scalar()));
            continue;
        }
        auto param = parse_param(key, it->second, ctx);
        if (!param) {
            continue;
        }
        const auto [other, inserted] = env_names.emplace(env_name_part(param->name), param->name);
        if (!inserted) {
            ctx.error(key, fmt::format("parameters \"{}\" and \"{}\" both become "
                                       "RUNBOOK_PARAM_{}",
                                       other->second, param->name, other->first));
            continue;
        }
        runbook.params.push_back(std::move(*param));
    }
}

void parse_lock(const YAML::Node& node, ParseContext& ctx, Runbook& runbook) {
    if (!node.IsDefined()) {
        return;
    }
    runbook.lock_location = ctx.location(node);
    auto key = ctx.template_string(node, "lock");
    if (key && key->source().empty()) {
        ctx.error(node,
                  "lock: expected a non-empty key (e.g. lock: \"restart-{{ "
                  "alert.labels.instance }}\")");
        return;
    }
    runbook.lock = std::move(key);
}

void parse_suppression(const YAML::Node& root, ParseContext& ctx, Runbook& runbook) {
    if (const auto d = find_key(root, "dedup"); d.IsDefined()) {
        auto key = ctx.template_string(d, "dedup");
        if (key && key->source().empty()) {
            ctx.error(d,
                      "dedup: expected a non-empty key (e.g. dedup: \"{{ "
                      "alert.labels.instance }}\")");
        } else {
            runbook.dedup = std::move(key);
        }
    }
    if (const auto c = find_key(root, "cooldown"); c.IsDefined()) {
        runbook.cooldown = ctx.duration(c, "cooldown");
    }
    if (const auto m = find_key(root, "max_runs"); m.IsDefined()) {
        if (!m.IsMap()) {
            ctx.error(m, "max_runs: expected a mapping such as {count: 3, per: 1h}");
            return;
        }
        ctx.check_mapping(m, "max_runs", {"count", "per"});
        const auto count = find_key(m, "count");
        const auto per = find_key(m, "per");
        if (!count.IsDefined() || !per.IsDefined()) {
            ctx.error(m, "max_runs: needs both count and per, e.g. {count: 3, per: 1h}");
            return;
        }
        const auto n = ctx.integer(count, "max_runs.count", 1, 1'000'000);
        const auto window = ctx.duration(per, "max_runs.per");
        if (n && window) {
            runbook.max_runs = Runbook::RunBudget{static_cast<int>(*n), *window};
        }
    }
    if (const auto o = find_key(root, "once_until_resolved"); o.IsDefined()) {
        runbook.once_until_resolved = ctx.boolean(o, "once_until_resolved").value_or(false);
    }
    if (runbook.dedup && !runbook.cooldown && !runbook.max_runs && !runbook.once_until_resolved) {
        ctx.warning(
            find_key(root, "dedup"),
            "dedup: the key is only used by cooldown, max_runs and once_until_resolved, and "
            "none is set");
    }
}

std::shared_ptr<Runbook> parse_runbook(const YAML::Node& root, ParseContext& ctx,
                                       const StepParsers& parsers) {
    auto runbook = std::make_shared<Runbook>();
    if (!root.IsMap()) {
        ctx.error(root, fmt::format("a runbook file holds one mapping (name, matchers, steps, "
                                    "...), got {}",
                                    node_kind(root)));
        return nullptr;
    }
    ctx.check_mapping(root, "runbook",
                      {"name", "description", "matchers", "on", "timeout", "concurrency", "lock",
                       "dedup", "cooldown", "max_runs", "once_until_resolved", "on_resolve",
                       "on_interrupt", "params", "steps"});
    parse_name(root, ctx, "runbook", runbook->name);
    runbook->name_location = ctx.location(find_key(root, "name"));
    if (const auto d = find_key(root, "description"); d.IsDefined()) {
        runbook->description = ctx.string(d, "description").value_or("");
    }
    parse_matchers(find_key(root, "matchers"), ctx, *runbook);
    if (runbook->matchers.empty()) {
        ctx.warning(root,
                    "runbook has no matchers, so no alert will ever start it (write e.g. "
                    "alertname=\"...\")");
    }
    parse_on(find_key(root, "on"), ctx, *runbook);
    if (const auto t = find_key(root, "timeout"); t.IsDefined()) {
        runbook->timeout = ctx.duration(t, "timeout");
    }
    if (const auto c = find_key(root, "concurrency"); c.IsDefined()) {
        if (const auto n = ctx.integer(c, "concurrency", 1, kMaxConcurrency)) {
            runbook->concurrency = static_cast<int>(*n);
        }
    }
    parse_params(find_key(root, "params"), ctx, *runbook);
    // Every declared name, also of declarations with errors: a reference to one of them is not
    // an error of its own.
    std::vector<std::string> declared;
    if (const auto p = find_key(root, "params"); p.IsMap()) {
        for (auto it = p.begin(); it != p.end(); ++it) {
            if (it->first.IsScalar()) {
                declared.push_back(it->first.Scalar());
            }
        }
    }
    ctx.set_declared_params(&declared);
    parse_lock(find_key(root, "lock"), ctx, *runbook);
    ctx.set_declared_params(nullptr);
    parse_suppression(root, ctx, *runbook);
    if (const auto r = find_key(root, "on_resolve"); r.IsDefined()) {
        if (const auto c = ctx.choice(r, "on_resolve", {"finish", "cancel"})) {
            runbook->on_resolve_cancel = *c == 1;
        }
    }
    if (const auto i = find_key(root, "on_interrupt"); i.IsDefined()) {
        if (const auto c = ctx.choice(i, "on_interrupt", {"resume", "fail"})) {
            runbook->on_interrupt =
                *c == 0 ? Runbook::OnInterrupt::Resume : Runbook::OnInterrupt::Fail;
        }
    }
    const YAML::Node steps = find_key(root, "steps");
    if (!steps.IsDefined()) {
        ctx.error(root, "runbook needs steps");
    }
    ctx.set_declared_params(&declared);
    parse_steps(steps, ctx, parsers, *runbook);
    ctx.set_declared_params(nullptr);
    if (!runbook->matchers.empty()) {
        for (const auto& p : runbook->params) {
            if (p.required && !p.default_value) {
                ctx.warning(p.location,
                            fmt::format("parameter {} is required and has no default, but alerts "
                                        "start this runbook: their runs have no value for it",
                                        p.name));
            }
        }
    }
    return runbook;
}

}  // namespace

YAML::Node find_key(const YAML::Node& map, std::string_view key) {
    for (auto it = map.begin(); it != map.end(); ++it) {
        if (it->first.IsScalar() && it->first.Scalar() == key) {
            return it->second;
        }
    }
    return YAML::Node(YAML::NodeType::Undefined);
}

SourceLocation ParseContext::location(const YAML::Mark& mark) const {
    if (mark.is_null()) {
        return SourceLocation{file_, 0, 0};
    }
    return SourceLocation{file_, mark.line + 1, mark.column + 1};
}

SourceLocation ParseContext::location(const YAML::Node& node) const {
    return location(node.Mark());
}

SourceLocation ParseContext::location_in(const YAML::Node& scalar, std::size_t offset) const {
    const SourceLocation whole = location(scalar);
    const YAML::Mark mark = scalar.Mark();
    if (text_.empty() || mark.is_null() || !scalar.IsScalar() || offset >= scalar.Scalar().size() ||
        static_cast<std::size_t>(mark.pos) >= text_.size()) {
        return whole;
    }
    const std::string_view value = scalar.Scalar();
    const std::size_t newline =
        offset == 0 ? std::string_view::npos : value.rfind('\n', offset - 1);
    const std::size_t begin = newline == std::string_view::npos ? 0 : newline + 1;
    const std::string_view value_line = value.substr(begin, value.find('\n', offset) - begin);
    const auto index = static_cast<std::size_t>(
        std::count(value.begin(), value.begin() + static_cast<std::ptrdiff_t>(begin), '\n'));

    // A literal block starts on the line after its `|`; folded blocks (`>`) join lines, so
    // their lines are not the file's.
    const char indicator = text_[static_cast<std::size_t>(mark.pos)];
    if (indicator == '>') {
        return whole;
    }
    const bool block = indicator == '|';
    const auto mark_line = static_cast<std::size_t>(mark.line);
    const std::size_t line = mark_line + index + (block ? 1 : 0);
    const std::string_view file_line = text_line(text_, line);
    const std::size_t from = line == mark_line ? static_cast<std::size_t>(mark.column) : 0;
    const std::size_t found = file_line.find(value_line, std::min(from, file_line.size()));
    if (found == std::string_view::npos) {
        return whole;
    }
    return SourceLocation{file_, static_cast<int>(line) + 1,
                          static_cast<int>(found + (offset - begin)) + 1};
}

void ParseContext::error(const YAML::Node& at, std::string message) {
    error(location(at), std::move(message));
}

void ParseContext::error(SourceLocation at, std::string message) {
    diagnostics_.push_back(Diagnostic{std::move(at), std::move(message)});
}

void ParseContext::warning(const YAML::Node& at, std::string message) {
    warning(location(at), std::move(message));
}

void ParseContext::warning(SourceLocation at, std::string message) {
    warnings_.push_back(Diagnostic{std::move(at), std::move(message)});
}

std::optional<std::string> ParseContext::string(const YAML::Node& node, std::string_view what) {
    if (!node.IsScalar()) {
        error(node, fmt::format("{}: expected a string, got {}", what, node_kind(node)));
        return std::nullopt;
    }
    return node.Scalar();
}

std::optional<Duration> ParseContext::duration(const YAML::Node& node, std::string_view what) {
    auto text = string(node, what);
    if (!text) {
        return std::nullopt;
    }
    auto d = parse_duration(*text);
    if (!d || d->count() <= 0) {
        error(node, fmt::format("{}: \"{}\" is not a positive duration (write e.g. 500ms, 30s, "
                                "5m, 1h30m)",
                                what, *text));
        return std::nullopt;
    }
    return d;
}

std::optional<std::int64_t> ParseContext::integer(const YAML::Node& node, std::string_view what,
                                                  std::int64_t min, std::int64_t max) {
    if (!node.IsScalar()) {
        error(node, fmt::format("{}: expected an integer, got {}", what, node_kind(node)));
        return std::nullopt;
    }
    const std::string& text = node.Scalar();
    std::int64_t value = 0;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (text.empty() || ptr != end || (ec != std::errc{} && ec != std::errc::result_out_of_range)) {
        error(node, fmt::format("{}: expected an integer, got \"{}\"", what, text));
        return std::nullopt;
    }
    if (ec == std::errc::result_out_of_range || value < min || value > max) {
        error(node, fmt::format("{}: must be from {} to {}, got {}", what, min, max, text));
        return std::nullopt;
    }
    return value;
}

std::optional<double> ParseContext::number(const YAML::Node& node, std::string_view what) {
    if (!node.IsScalar()) {
        error(node, fmt::format("{}: expected a number, got {}", what, node_kind(node)));
        return std::nullopt;
    }
    const std::string& text = node.Scalar();
    double value = 0.0;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (text.empty() || ptr != end || ec != std::errc{} || !std::isfinite(value)) {
        error(node, fmt::format("{}: expected a number, got \"{}\"", what, text));
        return std::nullopt;
    }
    return value;
}

std::optional<bool> ParseContext::boolean(const YAML::Node& node, std::string_view what) {
    auto text = string(node, what);
    if (!text) {
        return std::nullopt;
    }
    if (*text == "true") {
        return true;
    }
    if (*text == "false") {
        return false;
    }
    error(node, fmt::format("{}: expected true or false, got \"{}\"", what, *text));
    return std::nullopt;
}

std::optional<std::size_t> ParseContext::choice(const YAML::Node& node, std::string_view what,
                                                const std::vector<std::string_view>& choices) {
    auto text = string(node, what);
    if (!text) {
        return std::nullopt;
    }
    for (std::size_t i = 0; i < choices.size(); ++i) {
        if (*text == choices[i]) {
            return i;
        }
    }
    error(node,
          fmt::format("{}: expected {}, got \"{}\"", what, fmt::join(choices, " or "), *text));
    return std::nullopt;
}

std::optional<Template> ParseContext::template_string(const YAML::Node& node,
                                                      std::string_view what) {
    auto text = string(node, what);
    if (!text) {
        return std::nullopt;
    }
    auto parsed = Template::parse(*text);
    if (!parsed) {
        error(node, fmt::format("{}: {}", what, parsed.error().message));
        return std::nullopt;
    }
    bool references_ok = true;
    // Each `root.NAME` placeholder must name one of `known`; none may appear where `known` is
    // null.
    const auto check = [&](std::string_view root, const std::vector<std::string>* known,
                           std::string_view elsewhere, std::string_view unknown) {
        for (const auto& ref : parsed->references(root)) {
            const bool found = known != nullptr &&
                               std::find(known->begin(), known->end(), ref.name) != known->end();
            if (!found) {
                error(location_in(node, ref.offset),
                      fmt::format("{}: {}.{} {}", what, root, ref.name,
                                  known == nullptr ? elsewhere : unknown));
                references_ok = false;
            }
        }
    };
    check("steps", earlier_steps_,
          "cannot be used here: step outputs exist only for the steps of a run",
          "does not name an earlier step of this runbook (a step can use the outputs of the "
          "steps before it)");
    check("params", declared_params_,
          "cannot be used here: parameters exist only for the steps and the lock of a run",
          "is not a parameter of this runbook (declare it under params:)");
    if (!references_ok) {
        return std::nullopt;
    }
    return std::move(*parsed);
}

bool ParseContext::check_mapping(const YAML::Node& node, std::string_view what,
                                 const std::vector<std::string_view>& allowed) {
    if (!node.IsMap()) {
        error(node, fmt::format("{}: expected a mapping, got {}", what, node_kind(node)));
        return false;
    }
    bool ok = true;
    std::map<std::string, int> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
        const YAML::Node key = it->first;  // a copy: `it->` yields a temporary
        if (!key.IsScalar()) {
            error(key, fmt::format("{}: keys must be strings", what));
            ok = false;
            continue;
        }
        const std::string& name = key.Scalar();
        const auto [prev, inserted] = seen.emplace(name, key.Mark().line + 1);
        if (!inserted) {
            error(key, fmt::format("duplicate key \"{}\" (first at line {})", name, prev->second));
            ok = false;
            continue;
        }
        if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
            error(key, fmt::format("unknown key \"{}\" in {} (expected one of: {})", name, what,
                                   fmt::join(allowed, ", ")));
            ok = false;
        }
    }
    return ok;
}

LoadResult load_runbook_text(std::string_view text, const std::string& file,
                             const StepParsers& parsers,
                             const std::set<std::string>* secret_names) {
    LoadResult result;
    ParseContext ctx(file, text);
    ctx.set_secret_names(secret_names);
    std::vector<YAML::Node> documents;
    try {
        documents = YAML::LoadAll(std::string(text));
    } catch (const YAML::ParserException& e) {
        ctx.error(ctx.location(e.mark), fmt::format("YAML syntax error: {}", e.msg));
        result.errors = std::move(ctx.diagnostics());
        return result;
    }
    if (documents.empty()) {
        result.errors.push_back(Diagnostic{SourceLocation{file, 1, 1}, "the file is empty"});
        return result;
    }
    if (documents.size() > 1) {
        ctx.error(documents[1],
                  "a runbook file holds one YAML document; put each runbook in "
                  "its own file");
    }
    auto runbook = parse_runbook(documents[0], ctx, parsers);
    result.warnings = std::move(ctx.warnings());
    if (ctx.failed() || runbook == nullptr) {
        result.errors = std::move(ctx.diagnostics());
        return result;
    }
    runbook->source_file = file;
    runbook->source_text = std::string(text);
    runbook->content_hash = sha256_hex(text);
    result.runbooks.push_back(std::move(runbook));
    return result;
}

LoadResult load_runbook_dir(const std::filesystem::path& dir, const StepParsers& parsers,
                            const std::set<std::string>* secret_names) {
    namespace fs = std::filesystem;
    LoadResult result;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
        result.errors.push_back(Diagnostic{SourceLocation{dir.string(), 0, 0},
                                           fs::exists(dir, ec)
                                               ? "cannot read runbooks: not a directory"
                                               : "cannot read runbooks: no such directory"});
        return result;
    }

    std::vector<fs::path> files;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const auto& path = it->path();
        const auto name = path.filename().string();
        const auto ext = path.extension().string();
        if (name.starts_with('.') || (ext != ".yaml" && ext != ".yml")) {
            continue;
        }
        files.push_back(path);
    }
    if (ec) {
        result.errors.push_back(Diagnostic{SourceLocation{dir.string(), 0, 0},
                                           "cannot read runbooks: " + ec.message()});
        return result;
    }
    std::sort(files.begin(), files.end());

    std::map<std::string, std::string> names;  // runbook name -> file
    for (const auto& path : files) {
        const std::string file = path.string();
        const auto size = fs::file_size(path, ec);
        if (ec || size > kMaxFileSize) {
            result.errors.push_back(
                Diagnostic{SourceLocation{file, 0, 0},
                           ec ? "cannot read: " + ec.message()
                              : fmt::format("file is larger than {} bytes", kMaxFileSize)});
            continue;
        }
        std::ifstream in(path, std::ios::binary);
        std::stringstream buffer;
        buffer << in.rdbuf();
        if (!in.good() && !in.eof()) {
            result.errors.push_back(Diagnostic{SourceLocation{file, 0, 0}, "cannot read file"});
            continue;
        }
        auto loaded = load_runbook_text(buffer.str(), file, parsers, secret_names);
        for (auto& e : loaded.errors) {
            result.errors.push_back(std::move(e));
        }
        for (auto& w : loaded.warnings) {
            result.warnings.push_back(std::move(w));
        }
        for (auto& r : loaded.runbooks) {
            const auto [it, inserted] = names.emplace(r->name, file);
            if (!inserted) {
                result.errors.push_back(Diagnostic{
                    r->name_location,
                    fmt::format("runbook name \"{}\" is already used by {}", r->name, it->second)});
                continue;
            }
            result.runbooks.push_back(std::move(r));
        }
    }
    return result;
}

}  // namespace runbookd
