#include "daemon/daemon.hpp"

#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include <runbookd/step_parser.hpp>
#include <runbookd/store.hpp>

#include "api/routes.hpp"
#include "auth/auth.hpp"
#include "common/hash.hpp"
#include "common/log.hpp"
#include "exec/process.hpp"
#include "http/message.hpp"
#include "intake/alertmanager_intake.hpp"
#include "metrics/runbookd_metrics.hpp"
#include "python/check.hpp"
#include "python/pool.hpp"
#include "run/argv_executor.hpp"
#include "run/python_executor.hpp"
#include "run/scheduler.hpp"

namespace runbookd::daemon {

namespace asio = boost::asio;

struct Daemon::Parts {
    CurrentCatalog catalog{nullptr};
    std::set<std::string> secret_names;  // what runbooks may name, kept for reloads
    std::unique_ptr<Store> store;

    // The run engine's thread: the scheduler, every run and every child process live here.
    asio::io_context exec_io;
    std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>> exec_work;
    std::thread exec_thread;
    std::unique_ptr<exec::ProcessRunner> runner;
    std::unique_ptr<python::Pool> pool;  // Python workers, helpers of the runner
    std::unique_ptr<run::Scheduler> scheduler;
    std::unique_ptr<asio::steady_timer> heartbeat;  // on exec_io; see api::Health
    api::Health health;
    std::string output_dir;  // where steps' output files are written; empty: none are

    std::unique_ptr<intake::AlertmanagerIntake> intake;
    std::unique_ptr<auth::Authenticator> auth;
    api::ApiContext api;
    http::Router router;
    std::unique_ptr<http::Server> server;
    bool stopped = false;

    // Reloads run one after another on their own thread: the module check takes a while and
    // must hold neither an HTTP thread nor the run engine.
    asio::io_context reload_io;
    std::mutex reload_mutex;  // guards reload_work: reload() against shutdown()
    std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>> reload_work;
    std::thread reload_thread;

    // Stamps the run engine's heartbeat now and every kHeartbeatInterval, on the exec thread,
    // so that /livez sees whether that thread still turns.
    void beat() {
        health.engine_heartbeat_ms = api::Health::now_ms();
        heartbeat->expires_after(api::kHeartbeatInterval);
        heartbeat->async_wait([this](const boost::system::error_code& e) {
            if (!e) {
                beat();
            }
        });
    }
};

Result<std::shared_ptr<const RunbookCatalog>> load_catalog(
    const std::string& dir, const std::set<std::string>* secret_names) {
    auto loaded = load_runbook_dir(dir, builtin_step_parsers(), secret_names);
    for (const auto& w : loaded.warnings) {
        log::get("runbook")->warn("runbook warning where={} warning={}",
                                  log::quote(w.location.to_string()), log::quote(w.message));
    }
    if (!loaded.errors.empty()) {
        std::string message;
        for (const auto& d : loaded.errors) {
            message += (message.empty() ? "" : "\n") + d.to_string();
        }
        return make_error(ErrorCode::InvalidArgument, message);
    }
    return std::make_shared<const RunbookCatalog>(std::move(loaded.runbooks));
}

namespace {

// exec.output_dir when not configured: next to the database, named after it
// ("var/runbookd.db" → "var/runbookd.output").
std::string default_output_dir(const std::string& db_path) {
    std::filesystem::path p(db_path);
    p.replace_extension(".output");
    return p.string();
}

// What every step's exec::kInstanceEnv says: the database's absolute path, hashed (so that
// no path leaks into steps), short enough to read in `ps e`.
std::string instance_token(const std::string& db_path) {
    std::error_code ec;
    auto path = std::filesystem::weakly_canonical(std::filesystem::absolute(db_path, ec), ec);
    return sha256_hex(path.string()).substr(0, 16);
}

// Steps run as children of this process: enough descriptors for many at once, and orphans
// that escape their process group come back here to be killed (docs/execution.md).
// `original_open_files` gets the soft RLIMIT_NOFILE runbookd started with.
exec::RunnerOptions prepare_process_runner(const Config& config,
                                           std::uint64_t& original_open_files) {
    auto log = log::get("main");
    struct rlimit before {};
    original_open_files = ::getrlimit(RLIMIT_NOFILE, &before) == 0 ? before.rlim_cur : 1024;
    const std::uint64_t open_files = exec::raise_open_file_limit();
    log->info("open file limit soft={}", open_files);
    exec::RunnerOptions options;
    options.max_processes = config.max_processes;
    if (config.reap_orphans) {
        if (auto s = exec::become_subreaper(); !s) {
            log->warn("orphans of steps will not be killed error={}",
                      log::quote(s.error().message));
        } else {
            options.reap_orphans = true;
            log->info("child subreaper set; orphans of steps are killed");
        }
    }
    return options;
}

// python.worker, or the worker next to runbookd (where it is installed and built).
std::string python_worker_path(const Config& config) {
    if (!config.python.worker.empty()) {
        return config.python.worker;
    }
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    return (self.parent_path() / "runbookd-python-worker").string();
}

// The Python worker pool's settings: the config's `python:` and what workers share with steps
// (RUNBOOKD_INSTANCE, so that recovery after a crash finds leftover workers too).
python::PoolOptions python_options(const Config& config, const run::ProcessDefaults& process) {
    python::PoolOptions options = config.python;
    options.worker = python_worker_path(config);
    std::error_code ec;
    options.runbooks_dir = std::filesystem::absolute(config.runbooks_dir, ec).string();
    for (const auto& [name, value] : process.base_env) {
        options.env.push_back(name + "=" + value);
    }
    if (!process.instance.empty()) {
        options.env.push_back(fmt::format("{}={}", exec::kInstanceEnv, process.instance));
    }
    options.cwd = process.cwd;
    options.grace = process.grace;
    options.nice = process.nice;
    return options;
}

// Imports the modules of python steps in a separate process, as `runbookctl lint` does: a
// module that does not import or lacks its function makes the runbooks directory invalid.
// A check that cannot run at all (no worker, a broken interpreter) is logged, not fatal:
// alerts must still be recorded, and those steps fail with the reason when they run.
bool has_python_steps(const RunbookCatalog& catalog);

std::vector<std::string> python_module_problems(const Config& config,
                                                const RunbookCatalog& catalog) {
    if (!has_python_steps(catalog)) {
        return {};
    }
    python::PythonCheckOptions options;
    options.runbooks_dir = config.runbooks_dir;
    options.path = config.python.path;
    options.worker = python_worker_path(config);
    log::get("python")->info("checking the modules of python steps worker={}",
                             log::quote(options.worker));
    auto problems = python::check_python_steps(catalog.all(), options);
    if (!problems) {
        log::get("python")->error("python modules not checked error={}",
                                  log::quote(problems.error().describe()));
        return {};
    }
    std::vector<std::string> lines;
    for (const auto& d : *problems) {
        lines.push_back(d.to_string());
    }
    return lines;
}

Status check_python_modules(const Config& config, const RunbookCatalog& catalog) {
    const auto problems = python_module_problems(config, catalog);
    if (problems.empty()) {
        return {};
    }
    return make_error(
        ErrorCode::InvalidArgument,
        fmt::format("invalid runbooks in {}:\n{}", config.runbooks_dir, fmt::join(problems, "\n")));
}

std::vector<std::string> runbook_names(const RunbookCatalog& catalog) {
    std::vector<std::string> names;
    for (const auto& runbook : catalog.all()) {
        names.push_back(runbook->name);
    }
    return names;
}

// Fills the outcome's added, removed and changed (by content hash) names, sorted.
void compare_catalogs(const RunbookCatalog& before, const RunbookCatalog& after,
                      api::ReloadOutcome& outcome) {
    for (const auto& runbook : after.all()) {
        const auto old = before.find(runbook->name);
        if (!old) {
            outcome.added.push_back(runbook->name);
        } else if (old->content_hash != runbook->content_hash) {
            outcome.changed.push_back(runbook->name);
        }
    }
    for (const auto& runbook : before.all()) {
        if (!after.find(runbook->name)) {
            outcome.removed.push_back(runbook->name);
        }
    }
}

// The detail of a runbooks.reloaded or runbooks.reload_failed audit event.
std::string reload_detail(const std::string& actor, const api::ReloadOutcome& outcome,
                          const RunbookCatalog* catalog) {
    nlohmann::json detail = {{"actor", actor}};
    if (outcome.result != api::ReloadOutcome::Result::Reloaded) {
        detail["errors"] = outcome.errors;
        return detail.dump();
    }
    nlohmann::json hashes = nlohmann::json::object();
    for (const auto& runbook : catalog->all()) {
        hashes[runbook->name] = runbook->content_hash;
    }
    detail["runbooks"] = outcome.runbooks;
    detail["added"] = outcome.added;
    detail["removed"] = outcome.removed;
    detail["changed"] = outcome.changed;
    detail["hashes"] = hashes;
    return detail.dump();
}

// The reload is in force whether or not its event is written; a failure is logged.
void record_reload_event(Store& store, std::string kind, std::string detail) {
    store.record_event(std::move(kind), std::move(detail), [](Status s) {
        if (!s) {
            log::get("runbook")->warn("reload not recorded in the audit trail error={}",
                                      log::quote(s.error().message));
        }
    });
}

// Splits an error message holding one diagnostic per line.
std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start <= text.size()) {
        const auto end = std::min(text.find('\n', start), text.size());
        if (end > start) {
            lines.push_back(text.substr(start, end - start));
        }
        start = end + 1;
    }
    return lines;
}

// The principals of auth.tokens_file. Without one the API is open, so runbookd refuses any
// address but loopback (docs/auth.md, Safe default).
Result<auth::Principals> load_principals(const Config& config, const std::string& host) {
    auto log = log::get("main");
    if (config.tokens_file.empty()) {
        if (!auth::is_loopback_host(host)) {
            return make_error(
                ErrorCode::InvalidArgument,
                fmt::format("listen address {} is not loopback and no tokens are configured: "
                            "anyone who reaches it could post alerts and run runbooks; set "
                            "auth.tokens_file (docs/auth.md) or listen on 127.0.0.1 or [::1]",
                            host));
        }
        log->warn("authentication disabled: no tokens configured; listening on loopback only");
        return auth::Principals{};
    }
    auto principals = auth::load_tokens_file(config.tokens_file);
    if (!principals) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("invalid tokens file:\n{}", principals.error().message));
    }
    log->info("tokens loaded file={} principals={}", log::quote(config.tokens_file),
              principals->size());
    return principals;
}

bool has_python_steps(const RunbookCatalog& catalog) {
    for (const auto& runbook : catalog.all()) {
        for (const auto& step : runbook->steps) {
            if (step.kind == "python") {
                return true;
            }
        }
    }
    return false;
}

}  // namespace

Daemon::Daemon(Config config) : config_(std::move(config)), parts_(std::make_unique<Parts>()) {}

Daemon::~Daemon() {
    shutdown();
}

std::uint16_t Daemon::port() const {
    return parts_->server ? parts_->server->port() : 0;
}

Status Daemon::start() {
    // 1. Runbooks: refuse to start on any error, so that a typo never silently disables one.
    // 2. Store: open, migrate, record the runbook versions runs will refer to.
    // 3. Run engine thread, then recovery of what a previous process left unfinished.
    // 4. HTTP last: nothing is accepted before everything behind it works.
    auto log = log::get("main");
    auto& p = *parts_;
    http::ServerOptions http_options = config_.http;
    if (auto s = parse_listen(config_.listen, http_options.host, http_options.port); !s) {
        return s;
    }
    auto principals = load_principals(config_, http_options.host);
    if (!principals) {
        return principals.error();
    }
    // Secrets first: runbooks may only name configured ones. Only names are ever logged.
    auto secrets = read_secrets(config_.secrets);
    if (!secrets) {
        return secrets.error();
    }
    std::set<std::string>& secret_names = p.secret_names;
    for (const auto& [name, value] : *secrets) {
        secret_names.insert(name);
    }
    if (!secret_names.empty()) {
        log->info("secrets read count={} names={}", secret_names.size(),
                  log::quote(fmt::format("{}", fmt::join(secret_names, ","))));
    }
    auto catalog = load_catalog(config_.runbooks_dir, &secret_names);
    if (!catalog) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("invalid runbooks in {}:\n{}", config_.runbooks_dir,
                                      catalog.error().message));
    }
    p.catalog.set(*catalog);
    if (auto s = check_python_modules(config_, **catalog); !s) {
        return s;
    }
    log->info("runbooks loaded dir={} count={}", log::quote(config_.runbooks_dir),
              (*catalog)->all().size());
    metrics::runbookd_metrics().set_runbooks(runbook_names(**catalog));

    SqliteOptions store_options;
    store_options.path = config_.db_path;
    store_options.synchronous_full = config_.synchronous_full;
    store_options.busy_timeout_ms = config_.busy_timeout_ms;
    store_options.max_batch = config_.max_batch;
    auto store = open_sqlite_store(store_options);
    if (!store) {
        return store.error();
    }
    p.store = std::move(*store);
    p.health.store_open = true;
    if (auto s = p.store->record_runbooks((*catalog)->all()); !s) {
        return s;
    }
    log->info("database open path={} synchronous={} max_batch={}", log::quote(config_.db_path),
              config_.synchronous_full ? "full" : "normal", config_.max_batch);

    p.exec_work = std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
        p.exec_io.get_executor());
    std::uint64_t original_open_files = 0;
    p.runner = std::make_unique<exec::ProcessRunner>(
        p.exec_io, prepare_process_runner(config_, original_open_files));
    run::ProcessDefaults process = config_.process;
    if (!process.default_limits.open_files) {
        // runbookd raised its own limit for the descriptors of many children; the steps
        // themselves get the limit runbookd was started with.
        process.default_limits.open_files = original_open_files;
    }
    process.secrets = std::move(*secrets);
    if (process.output_dir.empty()) {
        process.output_dir = default_output_dir(config_.db_path);
    }
    if (process.output_cap_bytes > 0) {
        log->info("step output files dir={} cap_bytes={}", log::quote(process.output_dir),
                  process.output_cap_bytes);
        p.output_dir = process.output_dir;
    }
    // Marks every step of this database, for the next start's recovery (docs/runs.md).
    process.instance = instance_token(config_.db_path);
    run::SchedulerOptions run_options = config_.runs;
    run_options.instance = process.instance;
    run_options.secrets = process.secrets;
    p.pool = std::make_unique<python::Pool>(p.exec_io, *p.runner, python_options(config_, process));
    std::vector<std::shared_ptr<run::StepExecutor>> executors = {
        run::make_argv_executor(*p.runner, process), run::make_shell_executor(*p.runner, process),
        run::make_python_executor(*p.pool, *p.runner, process)};
    p.scheduler = std::make_unique<run::Scheduler>(
        p.exec_io, *p.store, *catalog, builtin_step_parsers(), std::move(executors), run_options);
    // Counted from here: the thread has kLivenessLimit to take its first turn.
    p.health.engine_heartbeat_ms = api::Health::now_ms();
    p.heartbeat = std::make_unique<asio::steady_timer>(p.exec_io);
    asio::post(p.exec_io, [&p] { p.beat(); });
    p.exec_thread = std::thread([&p] { p.exec_io.run(); });
    if (auto s = p.scheduler->recover(); !s) {
        return s;
    }
    p.health.recovered = true;
    // Only now: recovery stops every process carrying this database's RUNBOOKD_INSTANCE, and
    // workers started before it would be taken for leftovers of the previous runbookd.
    if (has_python_steps(**catalog)) {
        asio::post(p.exec_io, [&p] { p.pool->warm_up(); });
    }

    p.server = std::make_unique<http::Server>(http_options, p.router);
    p.intake = std::make_unique<intake::AlertmanagerIntake>(*p.store, p.catalog, *p.scheduler,
                                                            config_.clock, config_.intake);
    {
        std::lock_guard lock(p.reload_mutex);
        p.reload_work =
            std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
                p.reload_io.get_executor());
    }
    p.reload_thread = std::thread([&p] { p.reload_io.run(); });
    p.auth = std::make_unique<auth::Authenticator>(std::move(*principals), p.store.get());
    p.api =
        api::ApiContext{p.store.get(),
                        &p.catalog,
                        p.intake.get(),
                        p.scheduler.get(),
                        &p.health,
                        [this](std::string actor, std::function<void(api::ReloadOutcome)> done) {
                            reload(std::move(actor), std::move(done));
                        },
                        p.output_dir,
                        p.auth.get()};
    api::add_routes(p.router, p.api);
    if (auto s = p.server->start(); !s) {
        return s;
    }
    const bool v6 = http_options.host.find(':') != std::string::npos;
    log->info("listening address={}{}{}:{} version={}", v6 ? "[" : "", http_options.host,
              v6 ? "]" : "", p.server->port(), RUNBOOKD_VERSION);
    return {};
}

void Daemon::reload(std::string actor, std::function<void(api::ReloadOutcome)> done) {
    auto& p = *parts_;
    std::lock_guard lock(p.reload_mutex);
    if (!p.reload_work) {
        log::get("runbook")->warn("reload ignored: runbookd is not serving actor={}",
                                  log::quote(actor));
        return;
    }
    asio::post(p.reload_io, [this, actor = std::move(actor), done = std::move(done)] {
        auto outcome = reload_now(actor);
        if (done) {
            done(std::move(outcome));
        }
    });
}

api::ReloadOutcome Daemon::reload_now(const std::string& actor) {
    // 1. Read the tokens file and load and check every runbook as start() does; on any error
    //    nothing changes.
    // 2. Record the new versions, so that runs may refer to them before anything matches.
    // 3. Publish the principals, then the runbooks: deliveries match against the new set from
    //    here on; the run engine learns it, and the Python workers are replaced.
    // 4. Metrics names, the audit event, one log line.
    auto& p = *parts_;
    auto log = log::get("runbook");
    using R = api::ReloadOutcome::Result;
    api::ReloadOutcome outcome;
    auto fail = [&](R result, std::vector<std::string> errors) {
        outcome.result = result;
        outcome.errors = std::move(errors);
        for (const auto& e : outcome.errors) {
            log->error("runbooks not reloaded actor={} error={}", log::quote(actor), log::quote(e));
        }
        record_reload_event(*p.store, "runbooks.reload_failed",
                            reload_detail(actor, outcome, nullptr));
        metrics::runbookd_metrics().reload(result == R::InvalidRunbooks ? 1 : 2);
        return outcome;
    };
    std::optional<auth::Principals> principals;
    if (!config_.tokens_file.empty()) {
        auto read = auth::load_tokens_file(config_.tokens_file);
        if (!read) {
            return fail(R::InvalidRunbooks, split_lines(read.error().message));
        }
        principals = std::move(*read);
    }
    auto loaded = load_catalog(config_.runbooks_dir, &p.secret_names);
    if (!loaded) {
        return fail(R::InvalidRunbooks, split_lines(loaded.error().message));
    }
    const auto& next = *loaded;
    if (auto problems = python_module_problems(config_, *next); !problems.empty()) {
        return fail(R::InvalidRunbooks, std::move(problems));
    }
    if (auto s = p.store->record_runbooks(next->all()); !s) {
        return fail(R::Failed,
                    {fmt::format("recording the runbook versions failed: {}", s.error().message)});
    }

    if (principals) {
        log->info("tokens reloaded file={} principals={}", log::quote(config_.tokens_file),
                  principals->size());
        p.auth->set_principals(std::move(*principals));
    }
    compare_catalogs(*p.catalog.get(), *next, outcome);
    outcome.runbooks = next->all().size();
    p.catalog.set(next);
    // Workers are replaced on every reload, changed YAML or not: a module's file may have
    // changed under an unchanged runbook, and a reload is how an operator says "take it".
    asio::post(p.exec_io, [&p, next] {
        p.scheduler->set_catalog(next);
        p.pool->recycle();
        if (has_python_steps(*next)) {
            p.pool->warm_up();
        }
    });
    metrics::runbookd_metrics().set_runbooks(runbook_names(*next));
    record_reload_event(*p.store, "runbooks.reloaded", reload_detail(actor, outcome, next.get()));
    metrics::runbookd_metrics().reload(0);
    log->info("runbooks reloaded actor={} count={} added={} removed={} changed={}",
              log::quote(actor), outcome.runbooks, outcome.added.size(), outcome.removed.size(),
              outcome.changed.size());
    return outcome;
}

void Daemon::hurry() {
    if (parts_->scheduler) {
        log::get("main")->warn("cancelling active runs now count={}",
                               parts_->scheduler->active_runs());
        parts_->scheduler->cancel_active("cancelled: runbookd was told a second time to stop");
    }
}

void Daemon::run_on_engine_thread(std::function<void()> work) {
    asio::post(parts_->exec_io, std::move(work));
}

void Daemon::shutdown() {
    // 1. Draining: /readyz fails and the webhook answers 503 at once; reads, cancel and /livez
    //    are still served, so operators can watch the drain; no Python worker starts any more.
    // 2. Active runs finish within runs.shutdown_grace, then are cancelled and recorded;
    //    queued runs stay queued for the next start (docs/runs.md).
    // 3. HTTP: requests in flight are answered (up to 5 s), then the listener closes.
    // 4. The run engine thread, then the store (pending commits flushed).
    auto& p = *parts_;
    if (p.stopped) {
        return;
    }
    p.stopped = true;
    auto log = log::get("main");
    // A reload under way finishes first; none starts after this.
    {
        std::lock_guard lock(p.reload_mutex);
        p.reload_work.reset();
    }
    if (p.reload_thread.joinable()) {
        p.reload_thread.join();
    }
    p.health.draining = true;
    if (p.pool && p.exec_thread.joinable()) {
        asio::post(p.exec_io, [&p] { p.pool->stop_starting(); });
    }
    drain_runs();
    stop_python_workers();
    if (p.server) {
        p.server->stop(std::chrono::milliseconds(5000));
    }
    if (p.exec_work) {
        p.exec_work.reset();
    }
    if (p.exec_thread.joinable()) {
        p.exec_io.stop();
        p.exec_thread.join();
    }
    if (p.store) {
        p.health.store_open = false;
        p.store->close();
    }
    log->info("stopped");
}

void Daemon::stop_python_workers() {
    auto& p = *parts_;
    if (!p.pool || !p.exec_thread.joinable()) {
        return;
    }
    auto stopped = std::make_shared<std::promise<void>>();
    asio::post(p.exec_io, [&p, stopped] { p.pool->shutdown([stopped] { stopped->set_value(); }); });
    // `exit`, then SIGKILL after 1 s; PR_SET_PDEATHSIG kills whatever is left when the run
    // engine thread ends.
    if (stopped->get_future().wait_for(config_.process.grace + std::chrono::seconds(3)) !=
        std::future_status::ready) {
        log::get("main")->warn("python workers did not stop in time");
    }
}

void Daemon::drain_runs() {
    auto& p = *parts_;
    if (!p.scheduler || !p.exec_thread.joinable()) {
        return;
    }
    auto drained = std::make_shared<std::promise<void>>();
    p.scheduler->drain(config_.shutdown_grace, [drained] { drained->set_value(); });
    // Cancelled steps get their kill grace; a store that cannot record the outcome must not
    // hold the shutdown forever.
    const auto bound = config_.shutdown_grace + config_.process.grace + config_.process.drain +
                       std::chrono::seconds(10);
    if (drained->get_future().wait_for(bound) != std::future_status::ready) {
        log::get("main")->error("runs did not finish in time; stopping anyway active={}",
                                p.scheduler->active_runs());
    }
}

}  // namespace runbookd::daemon
