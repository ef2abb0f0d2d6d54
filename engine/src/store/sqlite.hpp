#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <sqlite3.h>

#include <runbookd/result.hpp>

// Thin RAII wrappers over the SQLite C API, used only inside the store.
namespace runbookd::sqlite {

class Database {
  public:
    Database() = default;
    ~Database();
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;
    Database(Database&& other) noexcept;
    Database& operator=(Database&& other) noexcept;

    static Result<Database> open(const std::string& path, bool read_only, int busy_timeout_ms);

    Status exec(std::string_view sql);
    sqlite3* handle() const { return db_; }
    std::int64_t last_insert_id() const { return sqlite3_last_insert_rowid(db_); }

  private:
    explicit Database(sqlite3* db) : db_(db) {}
    sqlite3* db_ = nullptr;
};

// A prepared statement. Binding indexes are 1-based; column indexes 0-based.
class Statement {
  public:
    Statement() = default;
    ~Statement();
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;
    Statement(Statement&& other) noexcept;
    Statement& operator=(Statement&& other) noexcept;

    static Result<Statement> prepare(const Database& db, std::string_view sql);

    Statement& bind(int index, std::int64_t value);
    Statement& bind(int index, std::string_view text);
    Statement& bind_blob(int index, std::string_view bytes);
    Statement& bind_null(int index);
    Statement& bind(int index, const std::optional<std::int64_t>& value);
    Statement& bind(int index, const std::optional<std::string>& text);

    // Runs one step. Returns true when a row is available, false when done.
    Result<bool> step();
    // Runs to completion, ignoring rows; then resets for reuse.
    Status run();
    void reset();

    bool is_null(int column) const;
    std::int64_t column_int(int column) const;
    std::string column_text(int column) const;
    std::optional<std::string> column_optional_text(int column) const;
    std::optional<std::int64_t> column_optional_int(int column) const;

  private:
    explicit Statement(sqlite3_stmt* stmt) : stmt_(stmt) {}
    sqlite3_stmt* stmt_ = nullptr;
};

// An Error for a failed SQLite call: "what failed: sqlite message (code)". Busy, full and I/O
// errors map to Unavailable so that callers answer 503 and try again later.
Error sqlite_error(sqlite3* db, int rc, std::string_view what);

}  // namespace runbookd::sqlite
