#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <runbookd/template.hpp>

using runbookd::Alert;
using runbookd::AlertStatus;
using runbookd::Template;
using runbookd::TemplateScope;

namespace {

Alert sample_alert() {
    Alert alert;
    alert.status = AlertStatus::Firing;
    alert.labels = {{"alertname", "HostHighLoad"},
                    {"instance", "node-1:9100"},
                    {"severity", "critical"},
                    {"empty", ""}};
    alert.annotations = {{"summary", "Load above 4"}, {"blank", ""}};
    alert.starts_at = runbookd::Timestamp{1796399366, 500'000'000};
    alert.generator_url = "http://prometheus:9090/graph?g0.expr=up";
    alert.fingerprint = "c66975c0e3469334";
    return alert;
}

// Parses and renders `text` for `alert` in run 4812 of runbook "restart-api".
runbookd::Result<std::string> render(const std::string& text, const Alert* alert) {
    auto parsed = Template::parse(text);
    REQUIRE(parsed.ok());
    return parsed->render(TemplateScope{alert, 4812, "restart-api"});
}

}  // namespace

TEST_CASE("a template that cannot be parsed says what is wrong and where", "[template]") {
    struct Case {
        std::string text;
        std::string message;
    };
    const std::vector<Case> cases = {
        {"echo {{ alert.status", "placeholder opened at character 6 is not closed with }}"},
        {"{{", "placeholder opened at character 1 is not closed with }}"},
        {"a }} b {{ run.id } c", "placeholder opened at character 8 is not closed with }}"},
        {"{{ }}", "expected a name in placeholder at character 4"},
        {"{{ 9lives }}", "expected a name in placeholder at character 4"},
        {"{{ run. }}", "expected a name in placeholder at character 8"},
        {"{{ run.id | upper }}",
         "unknown filter at character 13 (only `| default \"text\"` is supported)"},
        {"{{ run.id | default }}", "`default` needs a double-quoted string at character 21"},
        {"{{ run.id | default x }}", "`default` needs a double-quoted string at character 21"},
        {"{{ run.id | default \"x }}",
         "unterminated string literal in placeholder at character 21"},
        {"{{ \"abc }}", "unterminated string literal in placeholder at character 4"},
        {"x {{ \"a\\\" }}", "unterminated string literal in placeholder at character 6"},
        {"{{ run.id extra }}", "unexpected \"extra \" in placeholder at character 11"},
        {"{{ alert.labels.a | default \"x\" \"y\" }}",
         "unexpected \"\"y\" \" in placeholder at character 33"},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto parsed = Template::parse(c.text);

        REQUIRE_FALSE(parsed.ok());
        CHECK(parsed.error().code == runbookd::ErrorCode::InvalidArgument);
        CHECK(parsed.error().message == c.message);
    }
}

TEST_CASE("a placeholder naming an unknown path is rejected with the known paths", "[template]") {
    const std::vector<std::string> paths = {
        "alert.nope", "alert",        "alert.labels", "alert.labels.a.b",
        "labels.x",   "run",          "run.name",     "alert.annotations",
        "env.HOME",   "alert.Status", "run.id.x",     "alert.fingerprint.x",
    };

    for (const auto& path : paths) {
        CAPTURE(path);

        const auto parsed = Template::parse("{{ " + path + " }}");

        REQUIRE_FALSE(parsed.ok());
        CHECK(parsed.error().message ==
              "unknown placeholder \"" + path +
                  "\" (known: alert.labels.NAME, alert.annotations.NAME, alert.fingerprint, "
                  "alert.status, alert.starts_at, alert.generator_url, run.id, run.runbook, "
                  "steps.STEP.outputs.KEY, params.NAME)");
    }
}

TEST_CASE("placeholders render the alert and the run", "[template]") {
    const Alert alert = sample_alert();
    struct Case {
        std::string text;
        std::string rendered;
    };
    const std::vector<Case> cases = {
        {"{{ alert.labels.instance }}", "node-1:9100"},
        {"{{alert.labels.instance}}", "node-1:9100"},
        {"{{ \talert.labels.instance\t }}", "node-1:9100"},
        {"{{ alert.annotations.summary }}", "Load above 4"},
        {"{{ alert.fingerprint }}", "c66975c0e3469334"},
        {"{{ alert.status }}", "firing"},
        {"{{ alert.starts_at }}", "2026-12-04T15:49:26.5Z"},
        {"{{ alert.generator_url }}", "http://prometheus:9090/graph?g0.expr=up"},
        {"{{ run.id }}", "4812"},
        {"{{ run.runbook }}", "restart-api"},
        {"host={{ alert.labels.instance }} sev={{ alert.labels.severity }}",
         "host=node-1:9100 sev=critical"},
        {"{{ alert.labels.alertname }}{{ run.id }}", "HostHighLoad4812"},
        {"no placeholders", "no placeholders"},
        {"", ""},
        {"a }} b", "a }} b"},
        {"{ single } braces", "{ single } braces"},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto rendered = render(c.text, &alert);

        REQUIRE(rendered.ok());
        CHECK(*rendered == c.rendered);
    }
}

TEST_CASE("alert.status renders a resolved alert as resolved", "[template]") {
    Alert alert = sample_alert();
    alert.status = AlertStatus::Resolved;

    const auto rendered = render("{{ alert.status }}", &alert);

    REQUIRE(rendered.ok());
    CHECK(*rendered == "resolved");
}

TEST_CASE("a default replaces an absent or empty label or annotation", "[template]") {
    const Alert alert = sample_alert();
    struct Case {
        std::string text;
        std::string rendered;
    };
    const std::vector<Case> cases = {
        {"{{ alert.labels.team | default \"ops\" }}", "ops"},
        {"{{ alert.labels.empty | default \"ops\" }}", "ops"},
        {"{{ alert.labels.severity | default \"ops\" }}", "critical"},
        {"{{ alert.annotations.runbook_url | default \"none\" }}", "none"},
        {"{{ alert.annotations.blank | default \"none\" }}", "none"},
        {"{{ alert.annotations.summary | default \"none\" }}", "Load above 4"},
        {"{{ alert.labels.team|default\"ops\" }}", "ops"},
        {"{{ alert.labels.team | default \"\" }}", ""},
        {"{{ alert.labels.team | default \"say \\\"hi\\\" \\\\ bye\" }}", "say \"hi\" \\ bye"},
        {"{{ alert.labels.team | default \"{{ run.id\" }}", "{{ run.id"},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto rendered = render(c.text, &alert);

        REQUIRE(rendered.ok());
        CHECK(*rendered == c.rendered);
    }
}

TEST_CASE("an absent label without a default fails naming the label", "[template]") {
    const Alert alert = sample_alert();

    const auto rendered = render("restart {{ alert.labels.service }}", &alert);

    REQUIRE_FALSE(rendered.ok());
    CHECK(rendered.error().code == runbookd::ErrorCode::InvalidArgument);
    CHECK(rendered.error().message ==
          "label \"service\" is missing from the alert (write {{ alert.labels.service | default "
          "\"...\" }} to allow that)");
}

TEST_CASE("an absent annotation without a default fails naming the annotation", "[template]") {
    const Alert alert = sample_alert();

    const auto rendered = render("{{ alert.annotations.runbook_url }}", &alert);

    REQUIRE_FALSE(rendered.ok());
    CHECK(rendered.error().message ==
          "annotation \"runbook_url\" is missing from the alert (write "
          "{{ alert.annotations.runbook_url | default \"...\" }} to allow that)");
}

TEST_CASE("a present but empty label without a default renders as empty text", "[template]") {
    const Alert alert = sample_alert();

    SECTION("a label") {
        const auto rendered = render("[{{ alert.labels.empty }}]", &alert);

        REQUIRE(rendered.ok());
        CHECK(*rendered == "[]");
    }
    SECTION("an annotation") {
        const auto rendered = render("[{{ alert.annotations.blank }}]", &alert);

        REQUIRE(rendered.ok());
        CHECK(*rendered == "[]");
    }
}

TEST_CASE("a run without an alert renders run fields and defaults only", "[template]") {
    SECTION("run fields render") {
        const auto rendered = render("{{ run.runbook }}#{{ run.id }}", nullptr);

        REQUIRE(rendered.ok());
        CHECK(*rendered == "restart-api#4812");
    }
    SECTION("an alert field with a default renders the default") {
        const auto rendered = render("{{ alert.labels.instance | default \"all\" }}", nullptr);

        REQUIRE(rendered.ok());
        CHECK(*rendered == "all");
    }
    SECTION("an alert field without a default fails") {
        const auto rendered = render("{{ alert.fingerprint }}", nullptr);

        REQUIRE_FALSE(rendered.ok());
        CHECK(rendered.error().message ==
              "{{ alert.fingerprint }} needs an alert, and this run has none");
    }
}

TEST_CASE("a string literal placeholder renders its text, braces included", "[template]") {
    const Alert alert = sample_alert();
    struct Case {
        std::string text;
        std::string rendered;
    };
    const std::vector<Case> cases = {
        {"{{ \"{{\" }}", "{{"},
        {"{{\"{{\"}} run.id }}", "{{ run.id }}"},
        {"{{ \"{{\" }} alert.labels.instance }} is {{ alert.labels.instance }}",
         "{{ alert.labels.instance }} is node-1:9100"},
        {"{{ \"say \\\"hi\\\"\" }}", "say \"hi\""},
        {"{{ \"\" }}", ""},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto rendered = render(c.text, &alert);

        REQUIRE(rendered.ok());
        CHECK(*rendered == c.rendered);
    }
}

TEST_CASE("has_placeholders tells templates that need an alert or run from plain text",
          "[template]") {
    struct Case {
        std::string text;
        bool has_placeholders;
    };
    const std::vector<Case> cases = {
        {"systemctl", false},
        {"", false},
        {"{{ \"{{\" }} run.id }}", false},
        {"a }} b", false},
        {"{{ run.id }}", true},
        {"/usr/bin/{{ alert.labels.tool | default \"df\" }}", true},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto parsed = Template::parse(c.text);

        REQUIRE(parsed.ok());
        CHECK(parsed->has_placeholders() == c.has_placeholders);
        CHECK(parsed->source() == c.text);
    }
}

TEST_CASE("hostile label values are rendered once, as literal text", "[template]") {
    const std::vector<std::string> values = {
        "two words",
        "\"double\" and 'single' quotes",
        "$(rm -rf /)",
        "`reboot`",
        "a; reboot",
        "a && reboot || true",
        "line1\nline2\r\n",
        "$HOME ${PATH}",
        "{{ alert.labels.secret }}",
        "{{ run.id }}",
        "{{ \"{{\" }}",
        "}}{{",
        "{{",
        "\\",
        "-rf",
        std::string("nul\0byte", 8),
        "\xff\xfe not UTF-8",
    };

    for (const auto& value : values) {
        CAPTURE(value);
        Alert alert = sample_alert();
        alert.labels["secret"] = "leaked";
        alert.labels["v"] = value;
        alert.annotations["v"] = value;

        const auto label = render("<{{ alert.labels.v }}>", &alert);
        const auto annotation = render("<{{ alert.annotations.v }}>", &alert);
        const auto twice = render("{{ alert.labels.v }}{{ alert.labels.v }}", &alert);

        REQUIRE(label.ok());
        CHECK(*label == "<" + value + ">");
        REQUIRE(annotation.ok());
        CHECK(*annotation == "<" + value + ">");
        REQUIRE(twice.ok());
        CHECK(*twice == value + value);
    }
}

TEST_CASE("a hostile default value is rendered as literal text", "[template]") {
    const Alert alert = sample_alert();
    struct Case {
        std::string text;
        std::string rendered;
    };
    const std::vector<Case> cases = {
        {"{{ alert.labels.x | default \"$(id); `id` && echo\" }}", "$(id); `id` && echo"},
        {"{{ alert.labels.x | default \"{{ alert.labels.instance \" }}",
         "{{ alert.labels.instance "},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto rendered = render(c.text, &alert);

        REQUIRE(rendered.ok());
        CHECK(*rendered == c.rendered);
    }
}

TEST_CASE("steps outputs render strings as text and other JSON values as compact JSON",
          "[template]") {
    const runbookd::StepResults steps = {
        {"decide",
         {"succeeded", 0, R"({"restart": true, "host": "db-1", "n": 3, "list": [1, "a"]})", ""}}};
    const auto render_with = [&steps](const std::string& text) {
        auto parsed = Template::parse(text);
        REQUIRE(parsed.ok());
        return parsed->render(TemplateScope{nullptr, 1, "rb", &steps});
    };

    CHECK(*render_with("{{ steps.decide.outputs.restart }}") == "true");
    CHECK(*render_with("--host={{ steps.decide.outputs.host }}") == "--host=db-1");
    CHECK(*render_with("{{ steps.decide.outputs.n }}") == "3");
    CHECK(*render_with("{{ steps.decide.outputs.list }}") == R"([1,"a"])");
}

TEST_CASE("a missing step or output fails the render unless the placeholder has a default",
          "[template]") {
    const runbookd::StepResults steps = {{"decide", {"succeeded", 0, R"({"a": "x"})", ""}},
                                         {"quiet", {"succeeded", 0, "", ""}}};
    const auto render_with = [&steps](const std::string& text) {
        auto parsed = Template::parse(text);
        REQUIRE(parsed.ok());
        return parsed->render(TemplateScope{nullptr, 1, "rb", &steps});
    };

    const auto no_key = render_with("{{ steps.decide.outputs.b }}");
    const auto no_outputs = render_with("{{ steps.quiet.outputs.a }}");
    const auto no_step = render_with("{{ steps.later.outputs.a }}");

    REQUIRE_FALSE(no_key.ok());
    CHECK(no_key.error().message ==
          "step \"decide\" set no output \"b\" (write {{ steps.decide.outputs.b | default "
          "\"...\" }} to allow that)");
    REQUIRE_FALSE(no_outputs.ok());
    REQUIRE_FALSE(no_step.ok());
    CHECK(no_step.error().message ==
          "step \"later\" has not ended in this run, so {{ steps.later.outputs.a }} has no value "
          "(write {{ steps.later.outputs.a | default \"...\" }} to allow that)");
    CHECK(*render_with("{{ steps.decide.outputs.b | default \"no\" }}") == "no");
    CHECK(render_with("{{ steps.later.outputs.a | default \"\" }}")->empty());
}
