// SQLite's raw commit rate on this machine, for bench/durable_intake.sh: one row INSERT and one
// COMMIT per transaction, WAL, synchronous=FULL, nothing else. What one commit per delivery
// would cost at best on the same filesystem.
//
//   sqlite_commit_bench --db FILE [--seconds 5] [--row-bytes 185]
//
// Prints one line: BENCH commits=N seconds=S rate=R (commits per second).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <sqlite3.h>

namespace {

int fail(sqlite3* db, const char* what) {
    std::fprintf(stderr, "sqlite_commit_bench: %s failed: %s\n", what,
                 db != nullptr ? sqlite3_errmsg(db) : "out of memory");
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    std::string path;
    double seconds = 5;
    std::size_t row_bytes = 185;  // the row size TOOLCHAIN.md measured with
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        if (flag == "--db") {
            path = argv[i + 1];
        } else if (flag == "--seconds") {
            seconds = std::atof(argv[i + 1]);
        } else if (flag == "--row-bytes") {
            row_bytes = static_cast<std::size_t>(std::atol(argv[i + 1]));
        } else {
            std::fprintf(stderr, "sqlite_commit_bench: unknown flag %s\n", flag.c_str());
            return 2;
        }
    }
    if (path.empty() || seconds <= 0 || row_bytes == 0) {
        std::fprintf(stderr,
                     "usage: sqlite_commit_bench --db FILE [--seconds S] [--row-bytes N]\n");
        return 2;
    }
    sqlite3* db = nullptr;
    if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
        return fail(db, "opening the database");
    }
    if (sqlite3_exec(
            db,
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
            "CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
            nullptr, nullptr, nullptr) != SQLITE_OK) {
        return fail(db, "setting up");
    }
    sqlite3_stmt *begin = nullptr, *insert = nullptr, *commit = nullptr;
    if (sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, nullptr) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO rows (body) VALUES (?)", -1, &insert, nullptr) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(db, "COMMIT", -1, &commit, nullptr) != SQLITE_OK) {
        return fail(db, "preparing");
    }
    const std::string body(row_bytes, 'x');
    const auto start = std::chrono::steady_clock::now();
    const auto until = start + std::chrono::duration<double>(seconds);
    long commits = 0;
    while (std::chrono::steady_clock::now() < until) {
        sqlite3_bind_text(insert, 1, body.data(), static_cast<int>(body.size()), SQLITE_STATIC);
        for (sqlite3_stmt* s : {begin, insert, commit}) {
            if (sqlite3_step(s) != SQLITE_DONE) {
                return fail(db, "a transaction");
            }
            sqlite3_reset(s);
        }
        ++commits;
    }
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("BENCH commits=%ld seconds=%.3f rate=%.1f\n", commits, took,
                static_cast<double>(commits) / took);
    for (sqlite3_stmt* s : {begin, insert, commit}) {
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
    return 0;
}
