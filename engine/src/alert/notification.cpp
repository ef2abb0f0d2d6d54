#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <runbookd/alert.hpp>

#include "common/hash.hpp"

namespace runbookd {
namespace {

using Json = nlohmann::json;

Error field_error(std::string where, std::string message) {
    return make_error(ErrorCode::InvalidArgument, std::move(message), std::move(where));
}

const char* json_type_name(const Json& value) {
    return value.is_null() ? "null" : value.type_name();
}

// Reads an optional string member; absent and null read as empty.
Result<std::string> optional_string(const Json& object, const char* key, const std::string& at) {
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) {
        return std::string();
    }
    if (!it->is_string()) {
        return field_error(at + key, fmt::format("expected a string, got {}", json_type_name(*it)));
    }
    return it->get<std::string>();
}

Result<LabelSet> label_set(const Json& object, const char* key, const std::string& at,
                           bool required) {
    const std::string where = at + key;
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) {
        if (required) {
            return field_error(where, "is required");
        }
        return LabelSet{};
    }
    if (!it->is_object()) {
        return field_error(where, fmt::format("expected an object, got {}", json_type_name(*it)));
    }
    LabelSet out;
    for (const auto& [name, value] : it->items()) {
        if (!value.is_string()) {
            return field_error(where + "." + name,
                               fmt::format("expected a string, got {}", json_type_name(value)));
        }
        out.emplace(name, value.get<std::string>());
    }
    return out;
}

Result<AlertStatus> status_field(const Json& object, const std::string& at, bool required) {
    auto text = optional_string(object, "status", at);
    if (!text) {
        return text.error();
    }
    if (text->empty() && !required) {
        return AlertStatus::Firing;
    }
    if (auto status = parse_alert_status(*text)) {
        return *status;
    }
    return field_error(at + "status",
                       fmt::format("expected \"firing\" or \"resolved\", got \"{}\"", *text));
}

Result<std::optional<Timestamp>> time_field(const Json& object, const char* key,
                                            const std::string& at, bool required) {
    auto text = optional_string(object, key, at);
    if (!text) {
        return text.error();
    }
    if (text->empty()) {
        if (required) {
            return field_error(at + key, "is required");
        }
        return std::optional<Timestamp>{};
    }
    auto parsed = parse_rfc3339(*text);
    if (!parsed) {
        return field_error(at + key, parsed.error().message);
    }
    return std::optional<Timestamp>{*parsed};
}

Result<Alert> parse_alert(const Json& value, std::size_t index) {
    const std::string at = fmt::format("alerts[{}].", index);
    if (!value.is_object()) {
        return field_error(at.substr(0, at.size() - 1),
                           fmt::format("expected an object, got {}", json_type_name(value)));
    }
    Alert alert;
    auto status = status_field(value, at, true);
    if (!status) {
        return status.error();
    }
    alert.status = *status;

    auto labels = label_set(value, "labels", at, true);
    if (!labels) {
        return labels.error();
    }
    alert.labels = std::move(*labels);
    auto annotations = label_set(value, "annotations", at, false);
    if (!annotations) {
        return annotations.error();
    }
    alert.annotations = std::move(*annotations);

    auto starts = time_field(value, "startsAt", at, true);
    if (!starts) {
        return starts.error();
    }
    alert.starts_at = **starts;
    auto ends = time_field(value, "endsAt", at, false);
    if (!ends) {
        return ends.error();
    }
    if (*ends && !(*ends)->is_go_zero()) {
        alert.ends_at = *ends;
    }

    auto generator = optional_string(value, "generatorURL", at);
    if (!generator) {
        return generator.error();
    }
    alert.generator_url = std::move(*generator);
    auto fingerprint = optional_string(value, "fingerprint", at);
    if (!fingerprint) {
        return fingerprint.error();
    }
    alert.fingerprint = std::move(*fingerprint);
    if (alert.fingerprint.empty()) {
        alert.fingerprint = fingerprint_of(alert.labels);
        alert.fingerprint_computed = true;
    }
    return alert;
}

Status parse_group_fields(const Json& root, Notification& out) {
    auto version = optional_string(root, "version", "");
    if (!version) {
        return version.error();
    }
    if (*version != "4") {
        return field_error("version", version->empty()
                                          ? std::string("is required (payload version \"4\")")
                                          : fmt::format("unsupported payload version \"{}\" "
                                                        "(runbookd reads version \"4\")",
                                                        *version));
    }
    out.version = *version;
    for (auto [key, target] :
         {std::pair{"receiver", &out.receiver}, std::pair{"groupKey", &out.group_key},
          std::pair{"externalURL", &out.external_url}}) {
        auto text = optional_string(root, key, "");
        if (!text) {
            return text.error();
        }
        *target = std::move(*text);
    }
    auto status = status_field(root, "", false);
    if (!status) {
        return status.error();
    }
    out.status = *status;
    for (auto [key, target] : {std::pair{"groupLabels", &out.group_labels},
                               std::pair{"commonLabels", &out.common_labels},
                               std::pair{"commonAnnotations", &out.common_annotations}}) {
        auto labels = label_set(root, key, "", false);
        if (!labels) {
            return labels.error();
        }
        *target = std::move(*labels);
    }
    if (const auto it = root.find("truncatedAlerts"); it != root.end() && !it->is_null()) {
        if (!it->is_number_integer() || it->get<std::int64_t>() < 0) {
            return field_error("truncatedAlerts", "expected a non-negative integer");
        }
        out.truncated_alerts = it->get<std::int64_t>();
    }
    return {};
}

}  // namespace

const char* alert_status_name(AlertStatus status) {
    return status == AlertStatus::Firing ? "firing" : "resolved";
}

std::optional<AlertStatus> parse_alert_status(std::string_view name) {
    if (name == "firing") {
        return AlertStatus::Firing;
    }
    if (name == "resolved") {
        return AlertStatus::Resolved;
    }
    return std::nullopt;
}

std::string fingerprint_of(const LabelSet& labels) {
    constexpr std::uint8_t kSeparator = 0xff;
    Fnv1a64 hash;
    for (const auto& [name, value] : labels) {
        hash.add(name);
        hash.add_byte(kSeparator);
        hash.add(value);
        hash.add_byte(kSeparator);
    }
    return fmt::format("{:016x}", hash.value());
}

Result<Notification> parse_notification(std::string_view body) {
    Json root;
    try {
        root = Json::parse(body);
    } catch (const Json::parse_error& e) {
        // nlohmann's text starts with "[json.exception.parse_error.101] "; keep what follows.
        std::string_view what = e.what();
        if (const auto end = what.find("] "); end != std::string_view::npos) {
            what.remove_prefix(end + 2);
        }
        return field_error("", fmt::format("body is not valid JSON: {}", what));
    }
    if (!root.is_object()) {
        return field_error("", fmt::format("expected a JSON object, got {}", json_type_name(root)));
    }

    Notification out;
    if (auto status = parse_group_fields(root, out); !status) {
        return status.error();
    }
    const auto alerts = root.find("alerts");
    if (alerts == root.end() || alerts->is_null()) {
        return field_error("alerts", "is required");
    }
    if (!alerts->is_array()) {
        return field_error("alerts",
                           fmt::format("expected an array, got {}", json_type_name(*alerts)));
    }
    out.alerts.reserve(alerts->size());
    for (std::size_t i = 0; i < alerts->size(); ++i) {
        auto alert = parse_alert((*alerts)[i], i);
        if (!alert) {
            return alert.error();
        }
        out.alerts.push_back(std::move(*alert));
    }
    return out;
}

}  // namespace runbookd
