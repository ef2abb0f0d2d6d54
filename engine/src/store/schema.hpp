#pragma once

#include <string_view>
#include <vector>

#include <runbookd/result.hpp>

namespace runbookd::sqlite {
class Database;
}

namespace runbookd::schema {

// One step of the database schema. Migrations only ever append: a released migration is never
// edited, so every database reaches the same schema by the same steps.
struct Migration {
    int version;
    std::string_view description;
    std::string_view sql;
    // Code run after `sql` in the same transaction (e.g. computing values SQL cannot), then
    // `after_sql`.
    Status (*backfill)(sqlite::Database& db) = nullptr;
    std::string_view after_sql = {};
    // Rebuilds tables that others refer to (SQLite cannot change a CHECK constraint in place):
    // runs with foreign keys off, then checks them all before it commits.
    bool rebuilds_tables = false;
};

const std::vector<Migration>& migrations();

}  // namespace runbookd::schema
