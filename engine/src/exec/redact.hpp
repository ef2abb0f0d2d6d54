#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace runbookd::exec {

// Replaces the configured secrets' values by "[secret:NAME]" in what runbookd records or logs
// about a step (argv, errors, reasons, outputs, log and exec events), by the rules of the
// streaming Redactor applied to whole values: the longest value that matches wins. The step's
// processes still get the real values; only the record is redacted (docs/configuration.md,
// Secrets). Immutable once built: any thread may call it.
class SecretRedaction {
  public:
    SecretRedaction() = default;
    // (name, value) pairs; empty values are ignored.
    explicit SecretRedaction(std::vector<std::pair<std::string, std::string>> secrets);

    bool active() const { return !secrets_.empty(); }
    std::string text(std::string_view text) const;
    std::vector<std::string> argv(const std::vector<std::string>& argv) const;
    // Every string inside `value`, object keys included, redacted in place. Redacting the
    // strings and not the serialized text also catches values that JSON escapes.
    void json(nlohmann::json& value) const;
    // `text` holds a JSON value: parsed, redacted as above, serialized again compactly. Text
    // that is not JSON is redacted as plain text.
    std::string json_text(const std::string& text) const;

  private:
    std::vector<std::pair<std::string, std::string>> secrets_;
};

}  // namespace runbookd::exec
