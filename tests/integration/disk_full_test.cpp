#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/mount.h>
#include <unistd.h>

#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Rows = std::vector<std::vector<std::string>>;

// A tmpfs of `size_mib` MiB mounted on a directory this object creates, unmounted when it goes
// (also when a check fails). Needs root; `error()` says why the mount failed.
class TmpfsMount {
  public:
    TmpfsMount(std::filesystem::path where, int size_mib) : path_(std::move(where)) {
        std::filesystem::create_directories(path_);
        const std::string options = fmt::format("size={}m,mode=0755", size_mib);
        if (::mount("tmpfs", path_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
            error_ = std::strerror(errno);
            return;
        }
        mounted_ = true;
    }
    ~TmpfsMount() {
        if (mounted_ && ::umount2(path_.c_str(), 0) != 0) {
            ::umount2(path_.c_str(), MNT_DETACH);  // still busy: let it go when released
        }
    }
    TmpfsMount(const TmpfsMount&) = delete;
    TmpfsMount& operator=(const TmpfsMount&) = delete;

    bool mounted() const { return mounted_; }
    const std::string& error() const { return error_; }
    std::string file(const std::string& name) const { return (path_ / name).string(); }

  private:
    std::filesystem::path path_;
    bool mounted_ = false;
    std::string error_;
};

// Writes `file` until its filesystem is full (ENOSPC), in ever smaller pieces so that no
// whole page is left. Returns the bytes written.
std::size_t fill_filesystem(const std::string& file) {
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    std::vector<char> block(1 << 20, 'x');
    std::size_t total = 0;
    for (std::size_t piece = block.size(); piece > 0; piece /= 16) {
        for (;;) {
            const ssize_t n = ::write(fd, block.data(), piece);
            if (n <= 0) {
                REQUIRE(errno == ENOSPC);
                break;
            }
            total += static_cast<std::size_t>(n);
        }
    }
    ::close(fd);
    return total;
}

}  // namespace

TEST_CASE(
    "with the disk full a delivery gets 503 and runs nothing, and intake and runs in "
    "progress recover once space is freed, without a restart",
    "[diskfull]") {
    if (::geteuid() != 0) {
        WARN("skipped: mounting a tmpfs needs root, and this test runs as uid " << ::geteuid());
        return;
    }
    test::TempDir outside;
    TmpfsMount disk(outside.path() / "disk", 8);
    if (!disk.mounted()) {
        WARN("skipped: mounting a tmpfs on " << outside.file("disk")
                                             << " failed: " << disk.error());
        return;
    }
    const std::string gate = outside.file("gate");
    const std::string marks = outside.file("marks");
    std::filesystem::create_directories(marks);
    test::RunbookdProcess d({{"gated.yaml", test::gated_runbook(gate)},
                             {"mark.yaml", fmt::format(R"(name: mark
matchers: ['alertname="Mark"']
steps:
  - name: touch
    argv: [/usr/bin/touch, '{}/{{{{ alert.labels.instance }}}}']
)",
                                                       marks)}},
                            "", disk.file("runbookd.db"));
    REQUIRE(d.wait_ready());
    REQUIRE(
        d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Gated", "a"))->status ==
        200);
    REQUIRE(test::wait_until(
        [&] { return test::query_value(d.db(), "SELECT count(pid) FROM attempts") == "1"; }, 5s));

    const std::size_t filled = fill_filesystem(disk.file("filler"));
    auto full = d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Mark", "b"));
    test::write_file(gate, "");  // the running run's next writes now meet the full disk
    std::this_thread::sleep_for(1500ms);
    const std::string runs_while_full = test::query_value(d.db(), "SELECT count(*) FROM runs");
    const bool marked_while_full = std::filesystem::exists(marks + "/b");
    auto livez = d.get("/livez");
    const bool up_while_full = d.process().running();
    std::filesystem::remove(disk.file("filler"));
    auto freed = d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Mark", "c"));
    const bool finished = test::wait_until(
        [&] {
            return test::query_value(d.db(),
                                     "SELECT count(*) FROM runs WHERE state IN "
                                     "('queued', 'running')") == "0";
        },
        20s);

    INFO(d.log());
    INFO("filler bytes: " << filled);
    REQUIRE(full.ok());
    CHECK(full->status == 503);
    CHECK(nlohmann::json::parse(full->body)["error"]["code"] == "store_unavailable");
    CHECK_THAT(full->body, Catch::Contains("full"));
    CHECK(runs_while_full == "1");
    CHECK_FALSE(marked_while_full);
    REQUIRE(livez.ok());
    CHECK(livez->status == 200);
    CHECK(up_while_full);
    REQUIRE(freed.ok());
    CHECK(freed->status == 200);
    CHECK(finished);
    CHECK(std::filesystem::exists(marks + "/c"));
    CHECK_FALSE(std::filesystem::exists(marks + "/b"));
    CHECK(test::query(d.db(), "SELECT runbook, state FROM runs ORDER BY id") ==
          Rows{{"gated", "succeeded"}, {"mark", "succeeded"}});
    CHECK(test::query(d.db(), "SELECT step, state FROM attempts WHERE run_id = 1 ORDER BY id") ==
          Rows{{"wait-for-gate", "succeeded"}, {"after", "succeeded"}});
    CHECK(test::query_value(d.db(), "SELECT count(*) FROM alerts") == "2");
    CHECK(d.process().running());
    d.process().signal(SIGTERM);
    CHECK(d.process().wait(10s) == 0);
    CHECK(test::query_value(d.db(), "PRAGMA integrity_check") == "ok");
}
