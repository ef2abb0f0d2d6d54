#include "common/log.hpp"

#include <array>
#include <mutex>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/details/log_msg.h>
#include <spdlog/formatter.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <runbookd/timestamp.hpp>

namespace runbookd::log {
namespace {

constexpr std::array kComponents = {"main", "config", "http",  "alert", "runbook",
                                    "run",  "exec",   "store", "ctl"};

bool is_plain(std::string_view value) {
    if (value.empty()) {
        return false;
    }
    for (const char c : value) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || c == '"' || c == '=' || c == '\\' || u == 0x7f) {
            return false;
        }
    }
    return true;
}

bool is_key_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

int hex_digit(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

// Reads a logfmt value starting at `pos`, unquoting it when quoted. Advances `pos`.
std::string read_value(std::string_view text, std::size_t& pos) {
    std::string out;
    if (pos < text.size() && text[pos] == '"') {
        ++pos;
        while (pos < text.size() && text[pos] != '"') {
            char c = text[pos++];
            if (c == '\\' && pos < text.size()) {
                c = text[pos++];
                if (c == 'n') {
                    c = '\n';
                } else if (c == 't') {
                    c = '\t';
                } else if (c == 'r') {
                    c = '\r';
                } else if (c == 'x' && pos + 2 <= text.size() && hex_digit(text[pos]) >= 0 &&
                           hex_digit(text[pos + 1]) >= 0) {
                    c = static_cast<char>(hex_digit(text[pos]) * 16 + hex_digit(text[pos + 1]));
                    pos += 2;
                }
            }
            out += c;
        }
        ++pos;
        return out;
    }
    while (pos < text.size() && text[pos] != ' ') {
        out += text[pos++];
    }
    return out;
}

// Where the key=value fields of a message begin: the first " key=" after the phrase.
std::size_t fields_start(std::string_view text) {
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != ' ') {
            continue;
        }
        std::size_t j = i + 1;
        while (j < text.size() && is_key_char(text[j])) {
            ++j;
        }
        if (j > i + 1 && j < text.size() && text[j] == '=') {
            return i;
        }
    }
    return text.size();
}

// One JSON object per line: {"ts":..., "level":..., "logger":..., "msg":..., fields...}.
class JsonFormatter final : public spdlog::formatter {
  public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
        const std::string_view text(msg.payload.data(), msg.payload.size());
        const std::size_t split = fields_start(text);

        nlohmann::ordered_json line;
        line["ts"] = Timestamp::from_system(msg.time).to_rfc3339_millis();
        const auto level = spdlog::level::to_string_view(msg.level);
        line["level"] = std::string_view(level.data(), level.size());
        line["logger"] = std::string_view(msg.logger_name.data(), msg.logger_name.size());
        line["msg"] = text.substr(0, split);
        std::size_t pos = split;
        while (pos < text.size()) {
            while (pos < text.size() && text[pos] == ' ') {
                ++pos;
            }
            const std::size_t eq = text.find('=', pos);
            if (eq == std::string_view::npos) {
                break;
            }
            std::string key(text.substr(pos, eq - pos));
            pos = eq + 1;
            line[key] = read_value(text, pos);
        }
        const std::string out =
            line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
        dest.append(out.data(), out.data() + out.size());
    }

    std::unique_ptr<spdlog::formatter> clone() const override {
        return std::make_unique<JsonFormatter>();
    }
};

std::mutex setup_mutex;
spdlog::sink_ptr shared_sink;

spdlog::sink_ptr sink() {
    if (!shared_sink) {
        shared_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
        shared_sink->set_formatter(std::make_unique<spdlog::pattern_formatter>(
            "%Y-%m-%dT%H:%M:%S.%eZ %-5l %n: %v", spdlog::pattern_time_type::utc));
    }
    return shared_sink;
}

std::shared_ptr<spdlog::logger> make_logger(const std::string& name) {
    auto logger = std::make_shared<spdlog::logger>(name, sink());
    logger->set_level(spdlog::get_level());
    spdlog::register_logger(logger);
    return logger;
}

}  // namespace

Result<Format> parse_format(std::string_view name) {
    if (name == "text") {
        return Format::Text;
    }
    if (name == "json") {
        return Format::Json;
    }
    return make_error(ErrorCode::InvalidArgument,
                      fmt::format("unknown log format \"{}\" (expected text or json)", name));
}

Status setup(std::string_view level, Format format) {
    const auto lvl = spdlog::level::from_str(std::string(level));
    if (lvl == spdlog::level::off && level != "off") {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("unknown log level \"{}\" (expected trace, debug, info, "
                                      "warn, error, critical or off)",
                                      level));
    }
    std::lock_guard lock(setup_mutex);
    spdlog::set_level(lvl);
    if (format == Format::Json) {
        sink()->set_formatter(make_json_formatter());
    } else {
        sink()->set_formatter(std::make_unique<spdlog::pattern_formatter>(
            "%Y-%m-%dT%H:%M:%S.%eZ %-5l %n: %v", spdlog::pattern_time_type::utc));
    }
    for (const char* name : kComponents) {
        if (auto existing = spdlog::get(name)) {
            existing->set_level(lvl);
        } else {
            make_logger(name);
        }
    }
    spdlog::apply_all([lvl](const std::shared_ptr<spdlog::logger>& l) { l->set_level(lvl); });
    return {};
}

std::shared_ptr<spdlog::logger> get(std::string_view component) {
    const std::string name(component);
    if (auto existing = spdlog::get(name)) {
        return existing;
    }
    std::lock_guard lock(setup_mutex);
    if (auto existing = spdlog::get(name)) {
        return existing;
    }
    return make_logger(name);
}

std::unique_ptr<spdlog::formatter> make_json_formatter() {
    return std::make_unique<JsonFormatter>();
}

std::string quote(std::string_view value) {
    if (is_plain(value)) {
        return std::string(value);
    }
    std::string out = "\"";
    for (const char c : value) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
                    out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
                } else {
                    out += c;
                }
        }
    }
    out += '"';
    return out;
}

}  // namespace runbookd::log
