#include "runbook/process_step.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <csignal>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

namespace runbookd {
namespace {

constexpr std::int64_t kMaxOpenFiles = 1'048'576;       // Linux's default fs.nr_open
constexpr std::int64_t kMaxProcesses = 4'194'304;       // Linux's largest pid_max
constexpr std::uint64_t kMinMemory = 1024 * 1024;       // below this nothing can even be executed
constexpr std::size_t kMaxAccountNameLength = 32;       // useradd's limit
constexpr std::uint64_t kMaxAccountId = 4'294'967'294;  // (uid_t)-1 means "no change"

struct SignalName {
    std::string_view name;  // without "SIG"
    int number;
};

// The standard signals, whose numbers differ between platforms.
constexpr auto kSignals = std::to_array<SignalName>({
    {"HUP", SIGHUP},       {"INT", SIGINT},   {"QUIT", SIGQUIT},   {"ILL", SIGILL},
    {"TRAP", SIGTRAP},     {"ABRT", SIGABRT}, {"BUS", SIGBUS},     {"FPE", SIGFPE},
    {"KILL", SIGKILL},     {"USR1", SIGUSR1}, {"SEGV", SIGSEGV},   {"USR2", SIGUSR2},
    {"PIPE", SIGPIPE},     {"ALRM", SIGALRM}, {"TERM", SIGTERM},   {"CHLD", SIGCHLD},
    {"CONT", SIGCONT},     {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},   {"TTIN", SIGTTIN},
    {"TTOU", SIGTTOU},     {"URG", SIGURG},   {"XCPU", SIGXCPU},   {"XFSZ", SIGXFSZ},
    {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
    {"SYS", SIGSYS},
});

struct SizeUnit {
    std::string_view suffix;
    std::uint64_t bytes;
};

// Binary units are what memory is counted in; decimal ones are accepted with their SI meaning
// so that "512MB" is not silently read as 512MiB.
constexpr auto kSizeUnits = std::to_array<SizeUnit>({
    {"KiB", 1ULL << 10},
    {"MiB", 1ULL << 20},
    {"GiB", 1ULL << 30},
    {"TiB", 1ULL << 40},
    {"KB", 1'000ULL},
    {"MB", 1'000'000ULL},
    {"GB", 1'000'000'000ULL},
    {"TB", 1'000'000'000'000ULL},
    {"B", 1},
});

bool valid_env_name(std::string_view name) {
    if (name.empty() || std::isdigit(static_cast<unsigned char>(name.front())) != 0) {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
    });
}

// `{secret: NAME}` as the value of env variable `var`.
void parse_secret_ref(const YAML::Node& node, const std::string& var, ParseContext& ctx,
                      ProcessStepConfig& config) {
    const std::string what = "env." + var;
    if (!ctx.check_mapping(node, what, {"secret"})) {
        return;
    }
    const auto ref = find_key(node, "secret");
    if (!ref.IsDefined()) {
        ctx.error(node, fmt::format("{}: expected a string or {{secret: NAME}}", what));
        return;
    }
    auto secret = ctx.string(ref, what + ".secret");
    if (!secret) {
        return;
    }
    const auto* known = ctx.secret_names();
    if (known != nullptr && known->count(*secret) == 0) {
        std::string names;
        for (const auto& n : *known) {
            names += (names.empty() ? "" : ", ") + n;
        }
        ctx.error(ref, fmt::format("{}: unknown secret \"{}\" (configured secrets: {})", what,
                                   *secret, names.empty() ? "none" : names));
        return;
    }
    config.secret_env.emplace_back(var, std::move(*secret));
}

void parse_env(const YAML::Node& node, ParseContext& ctx, ProcessStepConfig& config) {
    if (!node.IsDefined()) {
        return;
    }
    if (!node.IsMap()) {
        ctx.error(node, "env: expected a mapping of variable names to values");
        return;
    }
    for (auto it = node.begin(); it != node.end(); ++it) {
        auto name = ctx.string(it->first, "env");
        if (!name) {
            continue;
        }
        if (!valid_env_name(*name)) {
            ctx.error(it->first, fmt::format("env: \"{}\" is not a valid variable name", *name));
            continue;
        }
        if (name->starts_with("RUNBOOK_")) {
            ctx.error(it->first, fmt::format("env: \"{}\" is reserved: runbookd sets the "
                                             "RUNBOOK_* variables itself",
                                             *name));
            continue;
        }
        if (*name == "TRACEPARENT") {
            ctx.error(it->first,
                      "env: \"TRACEPARENT\" is reserved: runbookd sets it to the run's place "
                      "in its trace (docs/tracing.md)");
            continue;
        }
        if (*name == "RUNBOOKD_INSTANCE") {
            ctx.error(it->first,
                      "env: \"RUNBOOKD_INSTANCE\" is reserved: it marks the step for "
                      "recovery after a crash (docs/runs.md)");
            continue;
        }
        const auto same = [&](const auto& entry) {
            return entry.first == *name;
        };
        if (std::any_of(config.env.begin(), config.env.end(), same) ||
            std::any_of(config.secret_env.begin(), config.secret_env.end(), same)) {
            ctx.error(it->first, fmt::format("duplicate key \"{}\"", *name));
            continue;
        }
        if (it->second.IsMap()) {
            parse_secret_ref(it->second, *name, ctx, config);
            continue;
        }
        auto value = ctx.template_string(it->second, "env." + *name);
        if (value) {
            config.env.emplace_back(std::move(*name), std::move(*value));
        }
    }
}

// "SIGTERM", "TERM", "sigterm" or "15".
std::optional<int> signal_number(std::string_view text) {
    int number = 0;
    const char* end = text.data() + text.size();
    if (const auto [ptr, ec] = std::from_chars(text.data(), end, number);
        ec == std::errc{} && ptr == end && !text.empty()) {
        for (const auto& s : kSignals) {
            if (s.number == number) {
                return number;
            }
        }
        return std::nullopt;
    }
    std::string upper;
    for (const char c : text) {
        upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    const std::string_view name =
        std::string_view(upper).starts_with("SIG") ? std::string_view(upper).substr(3) : upper;
    for (const auto& s : kSignals) {
        if (s.name == name) {
            return s.number;
        }
    }
    return std::nullopt;
}

void parse_stop_signal(const YAML::Node& node, ParseContext& ctx, ProcessStepConfig& config) {
    const auto text = ctx.string(node, "stop_signal");
    if (!text) {
        return;
    }
    const auto number = signal_number(*text);
    if (!number) {
        ctx.error(node, fmt::format("stop_signal: unknown signal \"{}\" (write a name such as "
                                    "SIGTERM, TERM or SIGINT, or its number)",
                                    *text));
        return;
    }
    if (*number == SIGKILL || *number == SIGSTOP) {
        ctx.error(node, fmt::format("stop_signal: SIG{} cannot be caught, so the program cannot "
                                    "stop cleanly (SIGKILL follows the stop signal after grace)",
                                    *number == SIGKILL ? "KILL" : "STOP"));
        return;
    }
    config.stop_signal = number;
}

// "512MiB", "2GiB", "1500MB": a whole number and a unit.
std::optional<std::uint64_t> parse_size(std::string_view text) {
    std::uint64_t number = 0;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, number);
    if (ec != std::errc{} || ptr == text.data()) {
        return std::nullopt;
    }
    const std::string_view suffix(ptr, static_cast<std::size_t>(end - ptr));
    for (const auto& unit : kSizeUnits) {
        if (unit.suffix == suffix) {
            if (number > std::numeric_limits<std::uint64_t>::max() / unit.bytes) {
                return std::nullopt;
            }
            return number * unit.bytes;
        }
    }
    return std::nullopt;
}

void parse_memory(const YAML::Node& node, ParseContext& ctx, ProcessLimits& limits) {
    const auto text = ctx.string(node, "limits.memory");
    if (!text) {
        return;
    }
    const auto bytes = parse_size(*text);
    if (!bytes) {
        ctx.error(node, fmt::format("limits.memory: \"{}\" is not a size (write e.g. 512MiB or "
                                    "2GiB; units B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)",
                                    *text));
        return;
    }
    if (*bytes < kMinMemory) {
        ctx.error(node, fmt::format("limits.memory: must be at least 1MiB, got {}", *text));
        return;
    }
    limits.address_space_bytes = bytes;
}

void parse_limits(const YAML::Node& node, ParseContext& ctx, ProcessLimits& limits) {
    ctx.check_mapping(node, "limits", {"cpu", "memory", "open_files", "processes"});
    if (!node.IsMap()) {
        return;
    }
    if (const auto cpu = find_key(node, "cpu"); cpu.IsDefined()) {
        const auto d = ctx.duration(cpu, "limits.cpu");
        if (d && d->count() % 1000 != 0) {
            ctx.error(cpu, fmt::format("limits.cpu: \"{}\" is not a whole number of seconds",
                                       cpu.Scalar()));
        } else if (d) {
            limits.cpu_seconds = static_cast<std::uint64_t>(d->count() / 1000);
        }
    }
    if (const auto memory = find_key(node, "memory"); memory.IsDefined()) {
        parse_memory(memory, ctx, limits);
    }
    if (const auto files = find_key(node, "open_files"); files.IsDefined()) {
        if (const auto n = ctx.integer(files, "limits.open_files", 1, kMaxOpenFiles)) {
            limits.open_files = static_cast<std::uint64_t>(*n);
        }
    }
    if (const auto procs = find_key(node, "processes"); procs.IsDefined()) {
        if (const auto n = ctx.integer(procs, "limits.processes", 1, kMaxProcesses)) {
            limits.processes = static_cast<std::uint64_t>(*n);
        }
    }
}

bool valid_account(std::string_view text) {
    if (!text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
            return std::isdigit(static_cast<unsigned char>(c)) != 0;
        })) {
        std::uint64_t id = 0;
        const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
        return ec == std::errc{} && id <= kMaxAccountId;
    }
    const auto name_char = [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' || c == '-';
    };
    return !text.empty() && text.size() <= kMaxAccountNameLength &&
           (std::isalpha(static_cast<unsigned char>(text.front())) != 0 || text.front() == '_') &&
           std::all_of(text.begin(), text.end(), name_char);
}

// `user:` or `group:`, a literal name or number: who runs the step is fixed by the runbook's
// author, never by an alert.
void parse_account(const YAML::Node& node, ParseContext& ctx, std::string_view what,
                   std::string& out) {
    auto text = ctx.string(node, what);
    if (!text) {
        return;
    }
    if (text->find("{{") != std::string::npos) {
        ctx.error(node, fmt::format("{}: cannot contain placeholders: alert values must not "
                                    "choose who runs the step",
                                    what));
        return;
    }
    if (!valid_account(*text)) {
        ctx.error(node, fmt::format("{}: \"{}\" is not a {} name or number", what, *text, what));
        return;
    }
    out = std::move(*text);
}

}  // namespace

std::vector<std::string_view> process_step_keys() {
    return {"env", "cwd", "stop_signal", "grace", "limits", "user", "group"};
}

void parse_process_keys(const YAML::Node& step, ParseContext& ctx, ProcessStepConfig& config) {
    parse_env(find_key(step, "env"), ctx, config);
    if (const auto cwd = find_key(step, "cwd"); cwd.IsDefined()) {
        config.cwd = ctx.template_string(cwd, "cwd");
        // A relative directory would depend on where runbookd happened to be started.
        if (config.cwd && !config.cwd->source().starts_with('/')) {
            ctx.error(cwd, "cwd: expected an absolute path (starting with /)");
            config.cwd.reset();
        }
    }
    if (const auto signal = find_key(step, "stop_signal"); signal.IsDefined()) {
        parse_stop_signal(signal, ctx, config);
    }
    if (const auto grace = find_key(step, "grace"); grace.IsDefined()) {
        config.grace = ctx.duration(grace, "grace");
    }
    if (const auto limits = find_key(step, "limits"); limits.IsDefined()) {
        parse_limits(limits, ctx, config.limits);
    }
    if (const auto user = find_key(step, "user"); user.IsDefined()) {
        parse_account(user, ctx, "user", config.user);
    }
    if (const auto group = find_key(step, "group"); group.IsDefined()) {
        parse_account(group, ctx, "group", config.group);
    }
}

std::string env_name_part(std::string_view name) {
    std::string out;
    out.reserve(name.size());
    for (const char c : name) {
        const char upper = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        const bool keep =
            (upper >= 'A' && upper <= 'Z') || (upper >= '0' && upper <= '9') || upper == '_';
        out += keep ? upper : '_';
    }
    return out;
}

}  // namespace runbookd
