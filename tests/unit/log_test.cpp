#include "common/log.hpp"

#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

using runbookd::log::quote;

TEST_CASE("plain values are logged as they are and others are quoted", "[log]") {
    CHECK(quote("host-1:9100") == "host-1:9100");
    CHECK(quote("") == "\"\"");
    CHECK(quote("two words") == "\"two words\"");
    CHECK(quote("a=b") == "\"a=b\"");
    CHECK(quote("say \"hi\"\\") == R"("say \"hi\"\\")");
    CHECK(quote("line\nbreak\x01") == R"("line\nbreak\x01")");
}

TEST_CASE("a label value cannot forge a log field", "[log]") {
    const std::string hostile = "x run=999 state=succeeded";

    const std::string line = "run finished run=1 instance=" + quote(hostile);

    CHECK(line == R"(run finished run=1 instance="x run=999 state=succeeded")");
}

TEST_CASE("JSON log lines carry the phrase and each field as its own key", "[log]") {
    std::ostringstream out;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    sink->set_formatter(runbookd::log::make_json_formatter());
    spdlog::logger logger("run", sink);

    logger.info("attempt finished run={} step={} error={}", 4, quote("disk-usage"),
                quote("exited with code 1\n\"bad\""));

    const auto line = nlohmann::json::parse(out.str());
    CHECK(line["msg"] == "attempt finished");
    CHECK(line["logger"] == "run");
    CHECK(line["level"] == "info");
    CHECK(line["run"] == "4");
    CHECK(line["step"] == "disk-usage");
    CHECK(line["error"] == "exited with code 1\n\"bad\"");
    CHECK(line["ts"].get<std::string>().size() == 24);
}
