#include <functional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <runbookd/alert.hpp>

#include "support/support.hpp"

using runbookd::AlertStatus;
using runbookd::fingerprint_of;
using runbookd::LabelSet;
using runbookd::parse_notification;
using runbookd::parse_rfc3339;
using runbookd::Timestamp;
using runbookd::test::fixture;
using Json = nlohmann::json;

namespace {

const char* const kFiringTwo = "alertmanager/v4-firing-two-alerts.json";
const char* const kOneResolved = "alertmanager/v4-one-resolved-one-firing.json";

Timestamp time_of(const char* text) {
    auto parsed = parse_rfc3339(text);
    REQUIRE(parsed.ok());
    return *parsed;
}

// The captured firing notification with `change` applied, as a body.
std::string modified_fixture(const std::function<void(Json&)>& change) {
    Json payload = Json::parse(fixture(kFiringTwo));
    change(payload);
    return payload.dump();
}

const LabelSet kNode1Labels = {{"alertname", "HostHighLoad"},
                               {"instance", "node-1.example.internal:9100"},
                               {"job", "node"},
                               {"severity", "warning"}};
const LabelSet kNode2Labels = {{"alertname", "HostHighLoad"},
                               {"instance", "node-2.example.internal:9100"},
                               {"job", "node"},
                               {"severity", "critical"}};

}  // namespace

TEST_CASE("the group fields of a captured Alertmanager notification are all read",
          "[notification]") {
    const auto parsed = parse_notification(fixture(kFiringTwo));

    REQUIRE(parsed.ok());
    CHECK(parsed->version == "4");
    CHECK(parsed->receiver == "runbookd");
    CHECK(parsed->status == AlertStatus::Firing);
    CHECK(parsed->group_key == "{}:{alertname=\"HostHighLoad\"}");
    CHECK(parsed->group_labels == LabelSet{{"alertname", "HostHighLoad"}});
    CHECK(parsed->common_labels == LabelSet{{"alertname", "HostHighLoad"}, {"job", "node"}});
    CHECK(parsed->common_annotations.empty());
    CHECK(parsed->external_url == "http://alertmanager.example.internal:9093");
    CHECK(parsed->truncated_alerts == 0);
    CHECK(parsed->alerts.size() == 2);
}

TEST_CASE("every field of both alerts of a captured firing notification is read",
          "[notification]") {
    const auto parsed = parse_notification(fixture(kFiringTwo));

    REQUIRE(parsed.ok());
    REQUIRE(parsed->alerts.size() == 2);
    const auto& first = parsed->alerts[0];
    CHECK(first.status == AlertStatus::Firing);
    CHECK(first.labels == kNode1Labels);
    CHECK(first.annotations ==
          LabelSet{{"runbook_url", "https://runbooks.example.internal/HostHighLoad"},
                   {"summary", "Load average above 4 on node-1"}});
    CHECK(first.starts_at == time_of("2026-12-04T15:49:26Z"));
    CHECK_FALSE(first.ends_at.has_value());
    CHECK(first.generator_url ==
          "http://prometheus.example.internal:9090/graph?g0.expr=node_load1+%3E+4");
    CHECK(first.fingerprint == "c66975c0e3469334");
    CHECK_FALSE(first.fingerprint_computed);
    const auto& second = parsed->alerts[1];
    CHECK(second.status == AlertStatus::Firing);
    CHECK(second.labels == kNode2Labels);
    CHECK(second.annotations == LabelSet{{"summary", "Load average above 8 on node-2"}});
    CHECK(second.starts_at == time_of("2026-12-04T15:49:26Z"));
    CHECK_FALSE(second.ends_at.has_value());
    CHECK(second.generator_url ==
          "http://prometheus.example.internal:9090/graph?g0.expr=node_load1+%3E+8");
    CHECK(second.fingerprint == "ecdedf3a5612da28");
    CHECK_FALSE(second.fingerprint_computed);
}

TEST_CASE("a resolved alert of a captured notification has its end time", "[notification]") {
    const auto parsed = parse_notification(fixture(kOneResolved));

    REQUIRE(parsed.ok());
    CHECK(parsed->status == AlertStatus::Firing);
    REQUIRE(parsed->alerts.size() == 2);
    const auto& resolved = parsed->alerts[0];
    CHECK(resolved.status == AlertStatus::Resolved);
    CHECK(resolved.labels == kNode1Labels);
    CHECK(resolved.fingerprint == "c66975c0e3469334");
    CHECK(resolved.starts_at == time_of("2026-12-04T15:49:26Z"));
    REQUIRE(resolved.ends_at.has_value());
    CHECK(*resolved.ends_at == time_of("2026-12-04T15:49:34Z"));
    const auto& firing = parsed->alerts[1];
    CHECK(firing.status == AlertStatus::Firing);
    CHECK(firing.fingerprint == "ecdedf3a5612da28");
    CHECK_FALSE(firing.ends_at.has_value());
}

TEST_CASE("fingerprint_of gives the fingerprints Alertmanager sent", "[notification]") {
    SECTION("node-1") {
        CHECK(fingerprint_of(kNode1Labels) == "c66975c0e3469334");
    }
    SECTION("node-2") {
        CHECK(fingerprint_of(kNode2Labels) == "ecdedf3a5612da28");
    }
    SECTION("the labels as parsed from the captured payloads") {
        for (const char* name : {kFiringTwo, kOneResolved}) {
            CAPTURE(name);

            const auto parsed = parse_notification(fixture(name));

            REQUIRE(parsed.ok());
            for (const auto& alert : parsed->alerts) {
                CHECK(fingerprint_of(alert.labels) == alert.fingerprint);
            }
        }
    }
}

TEST_CASE("fingerprint_of an empty label set is the FNV-1a offset basis", "[notification]") {
    const std::string fingerprint = fingerprint_of(LabelSet{});

    CHECK(fingerprint == "cbf29ce484222325");
}

TEST_CASE("fingerprint_of keeps names and values apart", "[notification]") {
    const std::string split_late = fingerprint_of(LabelSet{{"ab", "c"}});
    const std::string split_early = fingerprint_of(LabelSet{{"a", "bc"}});

    CHECK(split_late != split_early);
    CHECK(split_late.size() == 16);
    CHECK(split_early.size() == 16);
}

TEST_CASE("unknown fields of a notification are ignored", "[notification]") {
    const std::string body = modified_fixture([](Json& p) {
        p["futureField"] = {{"nested", {1, 2, 3}}};
        p["alerts"][0]["silencedBy"] = Json::array({"abc"});
        p["alerts"][1]["extra"] = nullptr;
    });

    const auto parsed = parse_notification(body);

    REQUIRE(parsed.ok());
    REQUIRE(parsed->alerts.size() == 2);
    CHECK(parsed->alerts[0].fingerprint == "c66975c0e3469334");
    CHECK(parsed->alerts[1].labels == kNode2Labels);
}

TEST_CASE("an alert without a fingerprint gets one computed from its labels", "[notification]") {
    SECTION("the field is absent") {
        const std::string body =
            modified_fixture([](Json& p) { p["alerts"][0].erase("fingerprint"); });

        const auto parsed = parse_notification(body);

        REQUIRE(parsed.ok());
        CHECK(parsed->alerts[0].fingerprint == "c66975c0e3469334");
        CHECK(parsed->alerts[0].fingerprint_computed);
        CHECK_FALSE(parsed->alerts[1].fingerprint_computed);
    }
    SECTION("the field is empty") {
        const std::string body =
            modified_fixture([](Json& p) { p["alerts"][1]["fingerprint"] = ""; });

        const auto parsed = parse_notification(body);

        REQUIRE(parsed.ok());
        CHECK(parsed->alerts[1].fingerprint == "ecdedf3a5612da28");
        CHECK(parsed->alerts[1].fingerprint_computed);
    }
}

TEST_CASE("a fingerprint sent by Alertmanager is kept as sent", "[notification]") {
    const std::string body =
        modified_fixture([](Json& p) { p["alerts"][0]["fingerprint"] = "0123456789abcdef"; });

    const auto parsed = parse_notification(body);

    REQUIRE(parsed.ok());
    CHECK(parsed->alerts[0].fingerprint == "0123456789abcdef");
    CHECK_FALSE(parsed->alerts[0].fingerprint_computed);
}

TEST_CASE("truncatedAlerts is read", "[notification]") {
    const std::string body = modified_fixture([](Json& p) { p["truncatedAlerts"] = 17; });

    const auto parsed = parse_notification(body);

    REQUIRE(parsed.ok());
    CHECK(parsed->truncated_alerts == 17);
}

TEST_CASE("optional fields may be absent or null", "[notification]") {
    const std::string body = modified_fixture([](Json& p) {
        p.erase("receiver");
        p.erase("status");
        p["groupLabels"] = nullptr;
        p.erase("commonLabels");
        p.erase("truncatedAlerts");
        p["alerts"][0].erase("annotations");
        p["alerts"][0].erase("endsAt");
        p["alerts"][0]["generatorURL"] = nullptr;
    });

    const auto parsed = parse_notification(body);

    REQUIRE(parsed.ok());
    CHECK(parsed->receiver.empty());
    CHECK(parsed->status == AlertStatus::Firing);
    CHECK(parsed->group_labels.empty());
    CHECK(parsed->common_labels.empty());
    CHECK(parsed->truncated_alerts == 0);
    CHECK(parsed->alerts[0].annotations.empty());
    CHECK_FALSE(parsed->alerts[0].ends_at.has_value());
    CHECK(parsed->alerts[0].generator_url.empty());
}

TEST_CASE("a notification with no alerts is read", "[notification]") {
    const std::string body = modified_fixture([](Json& p) { p["alerts"] = Json::array(); });

    const auto parsed = parse_notification(body);

    REQUIRE(parsed.ok());
    CHECK(parsed->alerts.empty());
}

TEST_CASE("bad raw bodies are rejected with an error on the whole body", "[notification]") {
    struct Case {
        std::string body;
        std::string message;
    };
    const std::vector<Case> cases = {
        {R"({"version":"4","alerts":[)", "body is not valid JSON: "},
        {"", "body is not valid JSON: "},
        {"{'version':'4'}", "body is not valid JSON: "},
        {"[]", "expected a JSON object, got array"},
        {R"("text")", "expected a JSON object, got string"},
        {"null", "expected a JSON object, got null"},
        {"4", "expected a JSON object, got number"},
    };

    for (const auto& c : cases) {
        CAPTURE(c.body);

        const auto parsed = parse_notification(c.body);

        REQUIRE_FALSE(parsed.ok());
        CHECK(parsed.error().code == runbookd::ErrorCode::InvalidArgument);
        CHECK(parsed.error().where.empty());
        CHECK_THAT(parsed.error().message, Catch::StartsWith(c.message));
    }
}

TEST_CASE("a malformed JSON body is described without nlohmann's exception prefix",
          "[notification]") {
    const auto parsed = parse_notification(R"({"version": "4",})");

    REQUIRE_FALSE(parsed.ok());
    CHECK_THAT(parsed.error().message,
               Catch::StartsWith("body is not valid JSON: parse error at line 1, column 17: "));
    CHECK_THAT(parsed.error().message, !Catch::Contains("[json.exception"));
}

TEST_CASE("a bad field is rejected with an error naming exactly that field", "[notification]") {
    struct Case {
        const char* what;
        std::function<void(Json&)> change;
        std::string where;
        std::string message;
    };
    const std::vector<Case> cases = {
        {"missing alerts", [](Json& p) { p.erase("alerts"); }, "alerts", "is required"},
        {"null alerts", [](Json& p) { p["alerts"] = nullptr; }, "alerts", "is required"},
        {"alerts not an array", [](Json& p) { p["alerts"] = Json::object(); }, "alerts",
         "expected an array, got object"},
        {"an alert not an object", [](Json& p) { p["alerts"][1] = "firing"; }, "alerts[1]",
         "expected an object, got string"},
        {"a label value not a string", [](Json& p) { p["alerts"][1]["labels"]["severity"] = 3; },
         "alerts[1].labels.severity", "expected a string, got number"},
        {"a label value null", [](Json& p) { p["alerts"][0]["labels"]["instance"] = nullptr; },
         "alerts[0].labels.instance", "expected a string, got null"},
        {"labels missing", [](Json& p) { p["alerts"][0].erase("labels"); }, "alerts[0].labels",
         "is required"},
        {"labels not an object", [](Json& p) { p["alerts"][0]["labels"] = Json::array(); },
         "alerts[0].labels", "expected an object, got array"},
        {"an annotation value not a string",
         [](Json& p) { p["alerts"][0]["annotations"]["summary"] = true; },
         "alerts[0].annotations.summary", "expected a string, got boolean"},
        {"a group label value not a string", [](Json& p) { p["groupLabels"]["alertname"] = 1.5; },
         "groupLabels.alertname", "expected a string, got number"},
        {"a common label set not an object", [](Json& p) { p["commonLabels"] = "job=node"; },
         "commonLabels", "expected an object, got string"},
        {"a bad alert status", [](Json& p) { p["alerts"][0]["status"] = "pending"; },
         "alerts[0].status", "expected \"firing\" or \"resolved\", got \"pending\""},
        {"a missing alert status", [](Json& p) { p["alerts"][1].erase("status"); },
         "alerts[1].status", "expected \"firing\" or \"resolved\", got \"\""},
        {"an alert status not a string", [](Json& p) { p["alerts"][0]["status"] = 1; },
         "alerts[0].status", "expected a string, got number"},
        {"a bad group status", [](Json& p) { p["status"] = "Firing"; }, "status",
         "expected \"firing\" or \"resolved\", got \"Firing\""},
        {"a bad startsAt", [](Json& p) { p["alerts"][0]["startsAt"] = "yesterday"; },
         "alerts[0].startsAt", "not an RFC 3339 time (too short): \"yesterday\""},
        {"a missing startsAt", [](Json& p) { p["alerts"][1].erase("startsAt"); },
         "alerts[1].startsAt", "is required"},
        {"a bad endsAt", [](Json& p) { p["alerts"][1]["endsAt"] = "2026-12-04 15:49:34 UTC"; },
         "alerts[1].endsAt", "not an RFC 3339 time (missing zone): \"2026-12-04 15:49:34 UTC\""},
        {"a fingerprint not a string", [](Json& p) { p["alerts"][0]["fingerprint"] = 12; },
         "alerts[0].fingerprint", "expected a string, got number"},
        {"a receiver not a string", [](Json& p) { p["receiver"] = Json::array(); }, "receiver",
         "expected a string, got array"},
        {"a wrong version", [](Json& p) { p["version"] = "3"; }, "version",
         "unsupported payload version \"3\" (runbookd reads version \"4\")"},
        {"a missing version", [](Json& p) { p.erase("version"); }, "version",
         "is required (payload version \"4\")"},
        {"a numeric version", [](Json& p) { p["version"] = 4; }, "version",
         "expected a string, got number"},
        {"a negative truncatedAlerts", [](Json& p) { p["truncatedAlerts"] = -1; },
         "truncatedAlerts", "expected a non-negative integer"},
        {"a fractional truncatedAlerts", [](Json& p) { p["truncatedAlerts"] = 1.5; },
         "truncatedAlerts", "expected a non-negative integer"},
    };

    for (const auto& c : cases) {
        CAPTURE(c.what);
        const std::string body = modified_fixture(c.change);

        const auto parsed = parse_notification(body);

        REQUIRE_FALSE(parsed.ok());
        CHECK(parsed.error().code == runbookd::ErrorCode::InvalidArgument);
        CHECK(parsed.error().where == c.where);
        CHECK(parsed.error().message == c.message);
        CHECK(parsed.error().describe() == c.where + ": " + c.message);
    }
}
