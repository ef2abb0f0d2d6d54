#include "daemon/config.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include <runbookd/step_parser.hpp>

namespace runbookd::daemon {
namespace {

// Typed readers over one config section; each records a located error on bad input.
class Section {
  public:
    Section(ParseContext& ctx, YAML::Node node, std::string name, std::filesystem::path base)
        : ctx_(ctx), node_(std::move(node)), name_(std::move(name)), base_(std::move(base)) {}

    bool check(const std::vector<std::string_view>& keys) {
        // The top level has no name of its own; messages call it "config".
        return ctx_.check_mapping(node_, name_.empty() ? std::string("config") : name_, keys);
    }
    YAML::Node child(std::string_view key) const { return find_key(node_, key); }

    void string(std::string_view key, std::string& out) {
        if (auto n = child(key); n.IsDefined()) {
            if (auto v = ctx_.string(n, qualified(key))) {
                out = *v;
            }
        }
    }
    void path(std::string_view key, std::string& out) {
        std::string value;
        string(key, value);
        if (!value.empty()) {
            const std::filesystem::path p(value);
            out = p.is_absolute() ? p.string() : (base_ / p).lexically_normal().string();
        }
    }
    template <typename D>
    void duration(std::string_view key, D& out) {
        if (auto n = child(key); n.IsDefined()) {
            if (auto d = ctx_.duration(n, qualified(key))) {
                out = std::chrono::duration_cast<D>(*d);
            }
        }
    }
    void count(std::string_view key, std::size_t& out, std::size_t min, std::size_t max) {
        auto n = child(key);
        if (!n.IsDefined()) {
            return;
        }
        auto text = ctx_.string(n, qualified(key));
        if (!text) {
            return;
        }
        std::size_t value = 0;
        const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
        if (ec != std::errc() || end != text->data() + text->size() || value < min || value > max) {
            ctx_.error(n, fmt::format("{}: expected a whole number from {} to {}, got \"{}\"",
                                      qualified(key), min, max, *text));
            return;
        }
        out = value;
    }
    void bytes(std::string_view key, std::size_t& out) {
        auto n = child(key);
        if (!n.IsDefined()) {
            return;
        }
        auto text = ctx_.string(n, qualified(key));
        if (!text) {
            return;
        }
        auto value = parse_byte_size(*text);
        if (!value || *value == 0) {
            ctx_.error(n, fmt::format("{}: \"{}\" is not a size (write e.g. 8MiB, 512KiB or a "
                                      "number of bytes)",
                                      qualified(key), *text));
            return;
        }
        out = *value;
    }
    Section sub(std::string_view key) const {
        return Section(ctx_, child(key), qualified(key), base_);
    }
    bool present() const { return node_.IsDefined() && !node_.IsNull(); }
    ParseContext& ctx() { return ctx_; }
    const std::filesystem::path& base() const { return base_; }

  private:
    std::string qualified(std::string_view key) const {
        return name_.empty() ? std::string(key) : name_ + "." + std::string(key);
    }

    ParseContext& ctx_;
    YAML::Node node_;
    std::string name_;
    std::filesystem::path base_;
};

bool valid_secret_name(std::string_view name) {
    return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-' || c == '.';
    });
}

// secrets: {NAME: {file: PATH} | {env: VAR}}. Only where each value comes from is read here;
// the values themselves are read by read_secrets() at start.
void read_secret_sources(Section& root, Config& c) {
    const YAML::Node node = root.child("secrets");
    if (!node.IsDefined() || node.IsNull()) {
        return;
    }
    ParseContext& ctx = root.ctx();
    if (!node.IsMap()) {
        ctx.error(node,
                  "secrets: expected a mapping of secret names to {file: PATH} or {env: VAR}");
        return;
    }
    for (auto it = node.begin(); it != node.end(); ++it) {
        auto name = ctx.string(it->first, "secrets");
        if (!name) {
            continue;
        }
        if (!valid_secret_name(*name)) {
            ctx.error(it->first, fmt::format("secrets: \"{}\" is not a valid secret name (letters, "
                                             "digits, _, - and .)",
                                             *name));
            continue;
        }
        Section entry(ctx, it->second, "secrets." + *name, root.base());
        if (!entry.check({"file", "env"})) {
            continue;
        }
        SecretSource source{*name, "", ""};
        entry.path("file", source.file);
        entry.string("env", source.env);
        if (source.file.empty() == source.env.empty()) {
            ctx.error(it->second,
                      fmt::format("secrets.{}: expected exactly one of file or env", *name));
            continue;
        }
        c.secrets.push_back(std::move(source));
    }
}

// python: the worker pool (docs/configuration.md, docs/python-steps.md).
void read_python(Section& py, python::PoolOptions& o) {
    py.check(
        {"workers", "max_steps_per_worker", "memory_limit", "startup_timeout", "path", "worker"});
    py.count("workers", o.workers, 1, 256);
    py.count("max_steps_per_worker", o.max_steps_per_worker, 1, 1'000'000);
    std::size_t memory = o.memory_limit;
    py.bytes("memory_limit", memory);
    o.memory_limit = memory;
    py.duration("startup_timeout", o.startup_timeout);
    py.path("worker", o.worker);
    const YAML::Node path = py.child("path");
    if (!path.IsDefined() || path.IsNull()) {
        return;
    }
    if (!path.IsSequence()) {
        py.ctx().error(path, "python.path: expected a list of directories");
        return;
    }
    o.path.clear();
    for (const auto& item : path) {
        if (auto dir = py.ctx().string(item, "python.path")) {
            const std::filesystem::path p(*dir);
            o.path.push_back(p.is_absolute() ? p.string()
                                             : (py.base() / p).lexically_normal().string());
        }
    }
}

void read_sections(Section& root, Config& c) {
    root.check({"listen", "runbooks", "db", "log", "http", "runs", "exec", "store", "secrets",
                "python", "auth"});
    read_secret_sources(root, c);
    root.string("listen", c.listen);
    root.path("runbooks", c.runbooks_dir);
    root.path("db", c.db_path);

    if (auto log = root.sub("log"); log.present()) {
        log.check({"level", "format"});
        log.string("level", c.log_level);
        log.string("format", c.log_format);
    }
    if (auto h = root.sub("http"); h.present()) {
        h.check({"body_limit", "threads", "max_connections", "idle_timeout", "request_timeout",
                 "max_pending_deliveries", "tls"});
        h.bytes("body_limit", c.http.body_limit);
        h.count("threads", c.http.threads, 1, 64);
        h.count("max_connections", c.http.max_connections, 1, 100'000);
        h.duration("idle_timeout", c.http.idle_timeout);
        h.duration("request_timeout", c.http.request_timeout);
        if (auto t = h.sub("tls"); t.present()) {
            t.check({"cert_file", "key_file", "client_ca_file"});
            t.path("cert_file", c.http.tls.cert_file);
            t.path("key_file", c.http.tls.key_file);
            t.path("client_ca_file", c.http.tls.client_ca_file);
            if (c.http.tls.cert_file.empty() || c.http.tls.key_file.empty()) {
                t.ctx().error(h.child("tls"), "http.tls: cert_file and key_file are both required");
            }
        }
        h.count("max_pending_deliveries", c.intake.max_pending_deliveries, 1, 1'000'000);
    }
    if (auto r = root.sub("runs"); r.present()) {
        r.check({"max_concurrent", "max_queued", "default_step_timeout", "default_run_timeout",
                 "shutdown_grace"});
        r.count("max_concurrent", c.runs.max_concurrent_runs, 1, 10'000);
        r.count("max_queued", c.intake.max_queued_runs, 1, 10'000'000);
        r.duration("default_step_timeout", c.runs.default_step_timeout);
        r.duration("default_run_timeout", c.runs.default_run_timeout);
        r.duration("shutdown_grace", c.shutdown_grace);
    }
    if (auto e = root.sub("exec"); e.present()) {
        e.check({"kill_grace", "output_drain", "output_excerpt", "cwd", "nice", "max_processes",
                 "output_dir", "output_cap", "default_limits"});
        e.duration("kill_grace", c.process.grace);
        e.duration("output_drain", c.process.drain);
        e.bytes("output_excerpt", c.process.excerpt_bytes);
        e.string("cwd", c.process.cwd);
        std::size_t nice = static_cast<std::size_t>(c.process.nice);
        e.count("nice", nice, 0, 19);
        c.process.nice = static_cast<int>(nice);
        e.count("max_processes", c.max_processes, 1, 100'000);
        e.path("output_dir", c.process.output_dir);
        std::size_t cap = static_cast<std::size_t>(c.process.output_cap_bytes);
        e.bytes("output_cap", cap);
        c.process.output_cap_bytes = static_cast<std::int64_t>(cap);
        if (auto l = e.sub("default_limits"); l.present()) {
            l.check({"cpu", "memory", "open_files", "processes"});
            auto& d = c.process.default_limits;
            // 0 (the default of each) means no limit; open_files 0 means the limit runbookd
            // itself started with.
            std::chrono::seconds cpu{d.cpu_seconds.value_or(0)};
            l.duration("cpu", cpu);
            std::size_t memory = d.address_space_bytes.value_or(0);
            l.bytes("memory", memory);
            std::size_t open_files = d.open_files.value_or(0);
            l.count("open_files", open_files, 0, 1'048'576);
            std::size_t processes = d.processes.value_or(0);
            l.count("processes", processes, 0, 4'194'304);
            const auto opt = [](std::uint64_t v) {
                return v == 0 ? std::nullopt : std::optional<std::uint64_t>(v);
            };
            d.cpu_seconds = opt(static_cast<std::uint64_t>(cpu.count()));
            d.address_space_bytes = opt(memory);
            d.open_files = opt(open_files);
            d.processes = opt(processes);
        }
    }
    if (auto a = root.sub("auth"); a.present()) {
        a.check({"tokens_file"});
        a.path("tokens_file", c.tokens_file);
    }
    if (auto py = root.sub("python"); py.present()) {
        read_python(py, c.python);
    }
    if (auto s = root.sub("store"); s.present()) {
        s.check({"synchronous", "busy_timeout", "max_batch"});
        std::string sync = c.synchronous_full ? "full" : "normal";
        s.string("synchronous", sync);
        if (sync != "full" && sync != "normal") {
            s.ctx().error(s.child("synchronous"),
                          "store.synchronous: expected full or normal, got \"" + sync + "\"");
        }
        c.synchronous_full = sync == "full";
        std::chrono::milliseconds busy{c.busy_timeout_ms};
        s.duration("busy_timeout", busy);
        c.busy_timeout_ms = static_cast<int>(busy.count());
        s.count("max_batch", c.max_batch, 1, 100'000);
    }
}

}  // namespace

Status load_config_file(const std::string& path, Config& config) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return make_error(ErrorCode::InvalidArgument, fmt::format("cannot read config file {}: {}",
                                                                  path, std::strerror(errno)));
    }
    std::stringstream buffer;
    buffer << in.rdbuf();

    ParseContext ctx(path);
    YAML::Node root;
    try {
        root = YAML::Load(buffer.str());
    } catch (const YAML::ParserException& e) {
        return make_error(ErrorCode::InvalidArgument, fmt::format("YAML syntax error: {}", e.msg),
                          ctx.location(e.mark).to_string());
    }
    if (!root.IsNull()) {
        const auto base = std::filesystem::path(path).parent_path();
        Section section(ctx, root, "", base);
        read_sections(section, config);
    }
    if (ctx.failed()) {
        auto& diagnostics = ctx.diagnostics();
        std::stable_sort(diagnostics.begin(), diagnostics.end(), [](const auto& a, const auto& b) {
            return std::pair(a.location.line, a.location.column) <
                   std::pair(b.location.line, b.location.column);
        });
        std::string message;
        for (const auto& d : diagnostics) {
            message += (message.empty() ? "" : "\n") + d.to_string();
        }
        return make_error(ErrorCode::InvalidArgument, message);
    }
    return {};
}

Result<SecretValues> read_secrets(const std::vector<SecretSource>& sources) {
    SecretValues out;
    for (const auto& s : sources) {
        std::string value;
        if (!s.file.empty()) {
            std::ifstream in(s.file, std::ios::binary);
            if (!in) {
                return make_error(ErrorCode::InvalidArgument,
                                  fmt::format("secret \"{}\": cannot read file {}: {}", s.name,
                                              s.file, std::strerror(errno)));
            }
            std::stringstream buffer;
            buffer << in.rdbuf();
            value = buffer.str();
            // Files written by editors and `echo` end with a newline that is not the secret.
            if (value.ends_with('\n')) {
                value.pop_back();
                if (value.ends_with('\r')) {
                    value.pop_back();
                }
            }
        } else {
            const char* env = std::getenv(s.env.c_str());
            if (env == nullptr) {
                return make_error(ErrorCode::InvalidArgument,
                                  fmt::format("secret \"{}\": environment variable {} is not set",
                                              s.name, s.env));
            }
            value = env;
        }
        const std::string source = s.file.empty() ? "variable " + s.env : "file " + s.file;
        if (value.empty()) {
            return make_error(ErrorCode::InvalidArgument,
                              fmt::format("secret \"{}\": {} is empty", s.name, source));
        }
        if (value.find('\0') != std::string::npos) {
            return make_error(ErrorCode::InvalidArgument,
                              fmt::format("secret \"{}\": {} holds a NUL byte, which cannot be "
                                          "passed in an environment variable",
                                          s.name, source));
        }
        out.emplace_back(s.name, std::move(value));
    }
    return out;
}

Status parse_listen(std::string_view listen, std::string& host, std::uint16_t& port) {
    const auto colon = listen.rfind(':');
    if (colon == std::string_view::npos) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("listen address \"{}\" needs HOST:PORT", listen));
    }
    std::string_view h = listen.substr(0, colon);
    const std::string_view p = listen.substr(colon + 1);
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') {
        h = h.substr(1, h.size() - 2);
    }
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), value);
    if (ec != std::errc() || end != p.data() + p.size() || value > 65535) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("listen address \"{}\": bad port \"{}\"", listen, p));
    }
    host = h.empty() ? "0.0.0.0" : std::string(h);
    port = static_cast<std::uint16_t>(value);
    return {};
}

std::optional<std::size_t> parse_byte_size(std::string_view text) {
    std::size_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc()) {
        return std::nullopt;
    }
    const std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
    std::size_t multiplier = 0;
    if (unit.empty() || unit == "B") {
        multiplier = 1;
    } else if (unit == "KiB") {
        multiplier = 1024;
    } else if (unit == "MiB") {
        multiplier = 1024 * 1024;
    } else if (unit == "GiB") {
        multiplier = 1024ULL * 1024 * 1024;
    } else {
        return std::nullopt;
    }
    if (value > SIZE_MAX / multiplier) {
        return std::nullopt;
    }
    return value * multiplier;
}

}  // namespace runbookd::daemon
