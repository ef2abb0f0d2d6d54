#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <spdlog/formatter.h>
#include <spdlog/logger.h>

#include <runbookd/result.hpp>

// Logging: one spdlog logger per component, all writing to stderr. A message is a fixed
// lower-case phrase followed by key=value fields ("attempt exited run=4 step=df exit_code=0").
// Values that come from outside (labels, paths, error text) go through log::quote() so that
// they cannot forge fields. In JSON mode the same message becomes one object per line with the
// phrase in "msg" and each field as its own key.
namespace runbookd::log {

enum class Format { Text, Json };

Result<Format> parse_format(std::string_view name);

// Configures every component logger. Call once at start-up, before other threads exist.
Status setup(std::string_view level, Format format);

// The logger of a component: "main", "config", "http", "alert", "runbook", "run", "exec",
// "store". Safe to call from any thread after setup(); before setup() it logs as text at info.
std::shared_ptr<spdlog::logger> get(std::string_view component);

// The formatter of --log-format json, exposed for tests.
std::unique_ptr<spdlog::formatter> make_json_formatter();

// A logfmt value: returned as is when it is a plain token, otherwise double-quoted with
// backslash escapes for '"', '\\' and control characters.
std::string quote(std::string_view value);

}  // namespace runbookd::log
