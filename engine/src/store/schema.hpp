#pragma once

#include <string_view>
#include <vector>

namespace runbookd::schema {

// One step of the database schema. Migrations only ever append: a released migration is never
// edited, so every database reaches the same schema by the same steps.
struct Migration {
    int version;
    std::string_view description;
    std::string_view sql;
};

const std::vector<Migration>& migrations();

}  // namespace runbookd::schema
