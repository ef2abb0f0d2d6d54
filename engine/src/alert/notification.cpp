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

// Reads a notification straight into Notification with nlohmann's SAX interface, without
// building a JSON document first: the webhook is the hot path, and the document's many small
// allocations cost more than the rest of the intake. Each value is routed by where it is
// (root field, alert field, label set); everything unknown is skipped whole. The first problem
// stops parsing with an error naming the field.
class NotificationReader final : public nlohmann::json_sax<Json> {
  public:
    explicit NotificationReader(Notification& out) : out_(out) {}

    Result<Notification> finish(bool parsed) {
        if (error_) {
            return *error_;
        }
        if (!parsed) {
            return field_error("", "body is not valid JSON");
        }
        if (!version_seen_) {
            return field_error("version", "is required (payload version \"4\")");
        }
        if (out_.version != "4") {
            return field_error("version", fmt::format("unsupported payload version \"{}\" "
                                                      "(runbookd reads version \"4\")",
                                                      out_.version));
        }
        if (!alerts_seen_) {
            return field_error("alerts", "is required");
        }
        return std::move(out_);
    }

    bool null() override { return scalar(Kind::Null, {}); }
    bool boolean(bool /*value*/) override { return scalar(Kind::Boolean, {}); }
    bool number_integer(number_integer_t value) override {
        return number(value >= 0, static_cast<std::int64_t>(value));
    }
    bool number_unsigned(number_unsigned_t value) override {
        return number(true, static_cast<std::int64_t>(std::min<number_unsigned_t>(
                                value, static_cast<number_unsigned_t>(INT64_MAX))));
    }
    bool number_float(number_float_t /*value*/, const string_t& /*text*/) override {
        return number(false, 0);
    }
    bool string(string_t& value) override { return scalar(Kind::String, std::move(value)); }
    bool binary(binary_t& /*value*/) override { return scalar(Kind::Number, {}); }

    bool start_object(std::size_t /*size*/) override { return container(true); }
    bool start_array(std::size_t /*size*/) override { return container(false); }
    bool end_object() override { return end(); }
    bool end_array() override { return end(); }

    bool key(string_t& value) override {
        stack_.back().key = std::move(value);
        return true;
    }

    bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                     const nlohmann::detail::exception& e) override {
        // nlohmann's text starts with "[json.exception.parse_error.101] "; keep what follows.
        std::string_view what = e.what();
        if (const auto close = what.find("] "); close != std::string_view::npos) {
            what.remove_prefix(close + 2);
        }
        return fail("", fmt::format("body is not valid JSON: {}", what));
    }

  private:
    enum class Kind { Null, Boolean, Number, String, Object, Array };
    // What a frame on the stack holds.
    enum class Frame { Root, Alerts, Alert, Labels, Skip };

    struct Level {
        Frame frame;
        std::string path;  // for errors: "", "alerts", "alerts[1]", "alerts[1].labels"
        std::string key;   // the current key, in objects
        LabelSet* labels = nullptr;
        std::size_t index = 0;  // the next element, in arrays
        // Alert fields that must be present.
        bool status_seen = false;
        bool labels_seen = false;
        bool starts_seen = false;
    };

    static const char* kind_name(Kind kind) {
        switch (kind) {
            case Kind::Null:
                return "null";
            case Kind::Boolean:
                return "boolean";
            case Kind::Number:
                return "number";
            case Kind::String:
                return "string";
            case Kind::Object:
                return "object";
            case Kind::Array:
                return "array";
        }
        return "value";
    }

    bool fail(std::string where, std::string message) {
        if (!error_) {
            error_ = field_error(std::move(where), std::move(message));
        }
        return false;
    }

    bool expected(const std::string& where, const char* what, Kind got) {
        return fail(where, fmt::format("expected {}, got {}", what, kind_name(got)));
    }

    std::string child_path(const Level& level) const {
        if (level.frame == Frame::Alerts) {
            return fmt::format("{}[{}]", level.path, level.index);
        }
        return level.path.empty() ? level.key : level.path + "." + level.key;
    }

    Alert& alert() { return out_.alerts.back(); }

    bool number(bool non_negative_integer, std::int64_t value) {
        if (!stack_.empty() && stack_.back().frame == Frame::Root &&
            stack_.back().key == "truncatedAlerts") {
            if (!non_negative_integer) {
                return fail("truncatedAlerts", "expected a non-negative integer");
            }
            out_.truncated_alerts = value;
            return true;
        }
        return scalar(Kind::Number, {});
    }

    // A string field of the root or of an alert; null reads as empty.
    bool string_field(const std::string& where, Kind kind, std::string value, std::string& target) {
        if (kind == Kind::Null) {
            target.clear();
            return true;
        }
        if (kind != Kind::String) {
            return expected(where, "a string", kind);
        }
        target = std::move(value);
        return true;
    }

    bool status_field(const std::string& where, Kind kind, const std::string& value,
                      AlertStatus& target) {
        if (kind != Kind::String && kind != Kind::Null) {
            return expected(where, "a string", kind);
        }
        if (auto status = parse_alert_status(value)) {
            target = *status;
            return true;
        }
        return fail(where, fmt::format("expected \"firing\" or \"resolved\", got \"{}\"", value));
    }

    bool time_field(const std::string& where, Kind kind, const std::string& value,
                    std::optional<Timestamp>& target) {
        if (kind == Kind::Null || (kind == Kind::String && value.empty())) {
            target.reset();
            return true;
        }
        if (kind != Kind::String) {
            return expected(where, "a string", kind);
        }
        auto parsed = parse_rfc3339(value);
        if (!parsed) {
            return fail(where, parsed.error().message);
        }
        target = *parsed;
        return true;
    }

    bool scalar(Kind kind, std::string value) {
        if (stack_.empty()) {
            return fail("", fmt::format("expected a JSON object, got {}", kind_name(kind)));
        }
        Level& top = stack_.back();
        const std::string where = child_path(top);
        switch (top.frame) {
            case Frame::Skip:
                return true;
            case Frame::Labels:
                if (kind != Kind::String) {
                    return expected(where, "a string", kind);
                }
                top.labels->insert_or_assign(top.key, std::move(value));
                return true;
            case Frame::Alerts:
                ++top.index;
                return expected(where, "an object", kind);
            case Frame::Root:
                return root_scalar(top, where, kind, std::move(value));
            case Frame::Alert:
                return alert_scalar(top, where, kind, std::move(value));
        }
        return true;
    }

    bool root_scalar(Level& top, const std::string& where, Kind kind, std::string value) {
        const std::string& k = top.key;
        if (k == "version") {
            version_seen_ = kind != Kind::Null;
            return string_field(where, kind, std::move(value), out_.version);
        }
        if (k == "receiver") {
            return string_field(where, kind, std::move(value), out_.receiver);
        }
        if (k == "groupKey") {
            return string_field(where, kind, std::move(value), out_.group_key);
        }
        if (k == "externalURL") {
            return string_field(where, kind, std::move(value), out_.external_url);
        }
        if (k == "status") {
            if (kind == Kind::Null) {
                return true;
            }
            return status_field(where, kind, value, out_.status);
        }
        if (k == "alerts") {
            if (kind == Kind::Null) {
                return fail(where, "is required");
            }
            return expected(where, "an array", kind);
        }
        if (k == "groupLabels" || k == "commonLabels" || k == "commonAnnotations") {
            return kind == Kind::Null ? true : expected(where, "an object", kind);
        }
        if (k == "truncatedAlerts" && kind != Kind::Null) {
            return fail(where, "expected a non-negative integer");
        }
        return true;
    }

    bool alert_scalar(Level& top, const std::string& where, Kind kind, std::string value) {
        const std::string& k = top.key;
        Alert& a = alert();
        if (k == "status") {
            top.status_seen = true;
            return status_field(where, kind, value, a.status);
        }
        if (k == "labels") {
            if (kind == Kind::Null) {
                return true;  // reported as missing when the alert ends
            }
            return expected(where, "an object", kind);
        }
        if (k == "annotations") {
            return kind == Kind::Null ? true : expected(where, "an object", kind);
        }
        if (k == "startsAt") {
            std::optional<Timestamp> t;
            if (!time_field(where, kind, value, t)) {
                return false;
            }
            top.starts_seen = t.has_value();
            if (t) {
                a.starts_at = *t;
            }
            return true;
        }
        if (k == "endsAt") {
            std::optional<Timestamp> t;
            if (!time_field(where, kind, value, t)) {
                return false;
            }
            a.ends_at = t && !t->is_go_zero() ? t : std::nullopt;
            return true;
        }
        if (k == "generatorURL") {
            return string_field(where, kind, std::move(value), a.generator_url);
        }
        if (k == "fingerprint") {
            return string_field(where, kind, std::move(value), a.fingerprint);
        }
        return true;
    }

    bool container(bool object) {
        const Kind kind = object ? Kind::Object : Kind::Array;
        if (stack_.empty()) {
            if (!object) {
                return fail("", "expected a JSON object, got array");
            }
            stack_.push_back(Level{Frame::Root, "", "", nullptr});
            return true;
        }
        Level& top = stack_.back();
        const std::string where = child_path(top);
        Frame next = Frame::Skip;
        LabelSet* labels = nullptr;
        switch (top.frame) {
            case Frame::Skip:
                break;
            case Frame::Labels:
                return expected(where, "a string", kind);
            case Frame::Alerts:
                ++top.index;
                if (!object) {
                    return expected(where, "an object", kind);
                }
                out_.alerts.emplace_back();
                next = Frame::Alert;
                break;
            case Frame::Root: {
                const std::string& k = top.key;
                if (k == "alerts") {
                    if (object) {
                        return expected(where, "an array", kind);
                    }
                    alerts_seen_ = true;
                    next = Frame::Alerts;
                } else if (k == "groupLabels" || k == "commonLabels" || k == "commonAnnotations") {
                    if (!object) {
                        return expected(where, "an object", kind);
                    }
                    labels = k == "groupLabels"    ? &out_.group_labels
                             : k == "commonLabels" ? &out_.common_labels
                                                   : &out_.common_annotations;
                    next = Frame::Labels;
                } else if (k == "version" || k == "receiver" || k == "groupKey" ||
                           k == "externalURL" || k == "status") {
                    return expected(where, "a string", kind);
                } else if (k == "truncatedAlerts") {
                    return fail(where, "expected a non-negative integer");
                }
                break;
            }
            case Frame::Alert: {
                const std::string& k = top.key;
                if (k == "labels" || k == "annotations") {
                    if (!object) {
                        return expected(where, "an object", kind);
                    }
                    if (k == "labels") {
                        top.labels_seen = true;
                    }
                    labels = k == "labels" ? &alert().labels : &alert().annotations;
                    next = Frame::Labels;
                } else if (k == "status" || k == "startsAt" || k == "endsAt" ||
                           k == "generatorURL" || k == "fingerprint") {
                    return expected(where, "a string", kind);
                }
                break;
            }
        }
        stack_.push_back(Level{next, where, "", labels});
        return true;
    }

    bool end() {
        const Level level = std::move(stack_.back());
        stack_.pop_back();
        if (level.frame != Frame::Alert) {
            return true;
        }
        const std::string& at = level.path;
        Alert& a = alert();
        if (!level.status_seen) {
            return fail(at + ".status", "expected \"firing\" or \"resolved\", got \"\"");
        }
        if (!level.labels_seen) {
            return fail(at + ".labels", "is required");
        }
        if (!level.starts_seen) {
            return fail(at + ".startsAt", "is required");
        }
        if (a.fingerprint.empty()) {
            a.fingerprint = fingerprint_of(a.labels);
            a.fingerprint_computed = true;
        }
        return true;
    }

    Notification& out_;
    std::vector<Level> stack_;
    std::optional<Error> error_;
    bool version_seen_ = false;
    bool alerts_seen_ = false;
};

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
    Notification out;
    NotificationReader reader(out);
    const bool parsed = Json::sax_parse(body.begin(), body.end(), &reader);
    return reader.finish(parsed);
}

}  // namespace runbookd
