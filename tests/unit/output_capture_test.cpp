#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <catch2/catch.hpp>

#include "exec/output.hpp"

using runbookd::exec::OutputCapture;
using Secrets = std::vector<std::pair<std::string, std::string>>;

namespace {

// What an excerpt of `all` must be: the whole stream when it fits, else its first `head` and
// last `tail` bytes around a marker naming the rest.
std::string expected_excerpt(const std::string& all, std::size_t head, std::size_t tail) {
    if (all.size() <= head + tail) {
        return all;
    }
    return all.substr(0, head) + "\n[... " + std::to_string(all.size() - head - tail) +
           " bytes omitted ...]\n" + all.substr(all.size() - tail);
}

// `size` bytes that differ from their neighbours, so that a shifted window shows.
std::string numbered_bytes(std::size_t size) {
    std::string out;
    for (std::size_t i = 0; i < size; ++i) {
        out += static_cast<char>('!' + static_cast<char>(i % 90));
    }
    return out;
}

void append_in_chunks(OutputCapture& capture, std::string_view data, std::size_t chunk) {
    while (!data.empty()) {
        const std::size_t take = std::min(chunk, data.size());
        capture.append(data.substr(0, take));
        data.remove_prefix(take);
    }
}

}  // namespace

TEST_CASE("an output capture with nothing written is empty", "[output]") {
    OutputCapture capture(16, 16);

    capture.append("");

    CHECK(capture.excerpt().empty());
    CHECK(capture.total_bytes() == 0);
}

TEST_CASE("small output is kept whole", "[output]") {
    OutputCapture capture(16, 16);

    capture.append("hello\n");
    capture.append("world\n");

    CHECK(capture.excerpt() == "hello\nworld\n");
    CHECK(capture.total_bytes() == 12);
}

TEST_CASE("output of exactly head plus tail bytes is kept whole without a marker", "[output]") {
    OutputCapture capture(4, 4);

    capture.append("abcdefgh");

    CHECK(capture.excerpt() == "abcdefgh");
    CHECK(capture.total_bytes() == 8);
}

TEST_CASE("large output keeps the first and last bytes around an omitted-bytes marker",
          "[output]") {
    OutputCapture capture(4, 4);

    capture.append("0123456789ABCDEF");

    CHECK(capture.excerpt() == "0123\n[... 8 bytes omitted ...]\nCDEF");
    CHECK(capture.total_bytes() == 16);
}

TEST_CASE("one byte too many is counted as omitted", "[output]") {
    OutputCapture capture(4, 4);

    capture.append("abcdefghi");

    CHECK(capture.excerpt() == "abcd\n[... 1 bytes omitted ...]\nfghi");
    CHECK(capture.total_bytes() == 9);
}

TEST_CASE("the excerpt is the same whatever the sizes of the appends", "[output]") {
    const std::string all = numbered_bytes(10'000);
    const std::size_t head = 300;
    const std::size_t tail = 700;

    for (const std::size_t chunk :
         {std::size_t{1}, std::size_t{3}, std::size_t{7}, std::size_t{64}, std::size_t{699},
          std::size_t{700}, std::size_t{701}, std::size_t{4096}, all.size()}) {
        CAPTURE(chunk);
        OutputCapture capture(head, tail);

        append_in_chunks(capture, all, chunk);

        CHECK(capture.excerpt() == expected_excerpt(all, head, tail));
        CHECK(capture.total_bytes() == 10'000);
    }
}

TEST_CASE("many one-byte appends wrap the ring and keep exactly the last bytes", "[output]") {
    OutputCapture capture(2, 5);

    for (char c = 'a'; c <= 'z'; ++c) {
        capture.append(std::string_view(&c, 1));
    }

    CHECK(capture.excerpt() == "ab\n[... 19 bytes omitted ...]\nvwxyz");
    CHECK(capture.total_bytes() == 26);
}

TEST_CASE("a large append after the ring wrapped replaces the whole tail", "[output]") {
    OutputCapture capture(2, 5);
    append_in_chunks(capture, "abcdefghijk", 1);

    capture.append("0123456789");

    CHECK(capture.excerpt() == "ab\n[... 14 bytes omitted ...]\n56789");
    CHECK(capture.total_bytes() == 21);
}

TEST_CASE("a capture without a tail keeps only the head", "[output]") {
    OutputCapture capture(4, 0);

    capture.append("abcdefgh");

    CHECK(capture.excerpt() == "abcd\n[... 4 bytes omitted ...]\n");
    CHECK(capture.total_bytes() == 8);
}

TEST_CASE("a capture without a head keeps only the tail", "[output]") {
    OutputCapture capture(0, 3);

    append_in_chunks(capture, "abcdefgh", 2);

    CHECK(capture.excerpt() == "\n[... 5 bytes omitted ...]\nfgh");
    CHECK(capture.total_bytes() == 8);
}

TEST_CASE("binary and invalid UTF-8 bytes are kept as written", "[output]") {
    std::string all;
    for (int i = 0; i < 256; ++i) {
        all += static_cast<char>(i);
    }
    all += "\xff\xfe\xc3(\xed\xa0\x80";

    SECTION("when everything fits") {
        OutputCapture capture(1024, 1024);

        append_in_chunks(capture, all, 5);

        CHECK(capture.excerpt() == all);
        CHECK(capture.total_bytes() == static_cast<std::int64_t>(all.size()));
    }
    SECTION("when the middle is dropped") {
        OutputCapture capture(64, 64);

        append_in_chunks(capture, all, 5);

        CHECK(capture.excerpt() == expected_excerpt(all, 64, 64));
        CHECK(capture.excerpt().substr(0, 64) == all.substr(0, 64));
        CHECK(capture.total_bytes() == static_cast<std::int64_t>(all.size()));
    }
}

TEST_CASE("a multi-byte character split between appends is kept intact", "[output]") {
    OutputCapture capture(16, 16);

    capture.append("caf\xc3");
    capture.append("\xa9 \xe2\x9c");
    capture.append("\x93");

    CHECK(capture.excerpt() == "caf\xc3\xa9 \xe2\x9c\x93");
}

TEST_CASE("every secret value in a stream is replaced, also when split across chunks",
          "[output][secrets]") {
    const std::string stream = "token=hunter2-xyz; again:hunter2-xyz; part hunter2 end";
    const std::string expected = "token=[secret:api]; again:[secret:api]; part hunter2 end";

    for (std::size_t chunk = 1; chunk <= stream.size(); ++chunk) {
        runbookd::exec::Redactor redactor(Secrets{{"api", "hunter2-xyz"}});
        std::string out;
        for (std::size_t i = 0; i < stream.size(); i += chunk) {
            out += redactor.feed(std::string_view(stream).substr(i, chunk));
        }
        out += redactor.finish();

        INFO("chunk size " << chunk);
        CHECK(out == expected);
    }
}

TEST_CASE("overlapping secret values are redacted by the longest, and nothing is held forever",
          "[output][secrets]") {
    runbookd::exec::Redactor redactor(Secrets{{"short", "abc"}, {"long", "abcdef"}, {"empty", ""}});

    std::string out = redactor.feed("xx abc");
    out += redactor.feed("def abc abcd");
    const std::string held = out;
    out += redactor.finish();

    CHECK(out == "xx [secret:long] [secret:short] [secret:short]d");
    CHECK(held == "xx [secret:long] [secret:short] ");
    CHECK(redactor.active());
    CHECK_FALSE(runbookd::exec::Redactor(Secrets{{"empty", ""}}).active());
}
