#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>

#include "common/log.hpp"
#include "daemon/config.hpp"
#include "daemon/daemon.hpp"

namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitConfig = 2;

// Blocks the shutdown signals and SIGHUP (reload) in this thread before any other starts, so
// that every thread inherits the mask and only sigwait() below receives them.
sigset_t block_shutdown_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    // Writes to closed sockets must return EPIPE, not kill the daemon.
    std::signal(SIGPIPE, SIG_IGN);
    return set;
}

}  // namespace

int main(int argc, char** argv) {
    using runbookd::daemon::Config;
    Config config;
    std::string config_file;
    std::string listen, runbooks, db, log_level, log_format;

    CLI::App app{"runbookd: runs incident runbooks when Alertmanager fires"};
    // A flag given twice takes its last value, so wrappers can pass defaults and users override.
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.set_version_flag("--version", std::string("runbookd ") + RUNBOOKD_VERSION);
    app.add_option("--config", config_file, "YAML configuration file")->check(CLI::ExistingFile);
    app.add_option("--listen", listen, "HTTP listen address HOST:PORT (default 127.0.0.1:9095)");
    app.add_option("--runbooks", runbooks, "directory of runbook YAML files (default runbooks)");
    app.add_option("--db", db, "SQLite database file (default runbookd.db)");
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error (default info)");
    app.add_option("--log-format", log_format, "text or json (default text)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return kExitConfig;
    }

    if (!config_file.empty()) {
        if (auto s = runbookd::daemon::load_config_file(config_file, config); !s) {
            std::fprintf(stderr, "runbookd: invalid configuration:\n%s\n",
                         s.error().describe().c_str());
            return kExitConfig;
        }
    }
    for (auto [flag, target] :
         {std::pair{&listen, &config.listen}, std::pair{&runbooks, &config.runbooks_dir},
          std::pair{&db, &config.db_path}, std::pair{&log_level, &config.log_level},
          std::pair{&log_format, &config.log_format}}) {
        if (!flag->empty()) {
            *target = *flag;
        }
    }

    auto format = runbookd::log::parse_format(config.log_format);
    if (!format) {
        std::fprintf(stderr, "runbookd: %s\n", format.error().message.c_str());
        return kExitConfig;
    }
    if (auto s = runbookd::log::setup(config.log_level, *format); !s) {
        std::fprintf(stderr, "runbookd: %s\n", s.error().message.c_str());
        return kExitConfig;
    }
    auto log = runbookd::log::get("main");

    const sigset_t signals = block_shutdown_signals();
    runbookd::daemon::Daemon daemon(config);
    if (auto s = daemon.start(); !s) {
        log->critical("start failed: {}", s.error().describe());
        daemon.shutdown();
        return s.error().code == runbookd::ErrorCode::InvalidArgument ? kExitConfig : kExitRuntime;
    }

    // SIGHUP reloads the runbooks, as Prometheus reloads its configuration; the reload runs on
    // the daemon's reload thread, so this thread keeps listening.
    int sig = 0;
    while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
        log->info("reload requested signal=SIGHUP");
        daemon.reload("signal:SIGHUP", {});
    }
    log->info("shutting down signal={} grace_ms={}", sig == SIGTERM ? "SIGTERM" : "SIGINT",
              config.shutdown_grace.count());

    // Shut down on another thread, so that a second signal can still be heard: it cancels the
    // active runs instead of waiting out their grace period.
    std::atomic<bool> stopped{false};
    std::thread stopper([&] {
        daemon.shutdown();
        stopped = true;
    });
    const timespec poll{0, 200'000'000};
    while (!stopped) {
        const int next = sigtimedwait(&signals, nullptr, &poll);
        if (next == SIGHUP) {
            log->warn("reload ignored: runbookd is shutting down signal=SIGHUP");
        } else if (next > 0) {
            daemon.hurry();
        }
    }
    stopper.join();
    return 0;
}
