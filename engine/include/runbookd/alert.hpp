#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <runbookd/result.hpp>
#include <runbookd/timestamp.hpp>

namespace runbookd {

// Label or annotation names to values. Ordered, so that JSON output and fingerprints are
// deterministic.
using LabelSet = std::map<std::string, std::string, std::less<>>;

enum class AlertStatus { Firing, Resolved };

const char* alert_status_name(AlertStatus status);
std::optional<AlertStatus> parse_alert_status(std::string_view name);

// One alert of a notification, identified by its fingerprint. Values are untrusted input.
struct Alert {
    AlertStatus status = AlertStatus::Firing;
    LabelSet labels;
    LabelSet annotations;
    Timestamp starts_at;
    // Empty while the alert is open: Alertmanager sends Go's zero time for firing alerts.
    std::optional<Timestamp> ends_at;
    std::string generator_url;
    std::string fingerprint;
    // True when the payload had no fingerprint and runbookd computed it from the labels.
    bool fingerprint_computed = false;
};

// One webhook POST from Alertmanager (payload version 4): a snapshot of an alert group.
struct Notification {
    std::string version;
    std::string receiver;
    AlertStatus status = AlertStatus::Firing;
    std::string group_key;
    LabelSet group_labels;
    LabelSet common_labels;
    LabelSet common_annotations;
    std::string external_url;
    std::int64_t truncated_alerts = 0;
    std::vector<Alert> alerts;
};

// Parses an Alertmanager webhook body. Unknown fields are ignored. On failure the Error's
// `where` names the offending field ("alerts[1].labels.severity").
Result<Notification> parse_notification(std::string_view body);

// The fingerprint Prometheus and Alertmanager give a label set: FNV-1a 64 over the sorted
// names and values, each followed by a 0xff byte, as 16 hex digits.
std::string fingerprint_of(const LabelSet& labels);

}  // namespace runbookd
