#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <runbookd/result.hpp>
#include <runbookd/timestamp.hpp>

#include "store/sqlite.hpp"

// The hash chain over the `events` table (docs/audit-schema.md): the canonical encoding of an
// event, the chain head the writer keeps, verification and pruning. Used by the store's writer
// thread, by the v6 migration and by runbookctl; every function takes the connection it works
// on and keeps no state of its own.
namespace runbookd::audit {

// prev_hash of the first event of a chain that was never pruned.
inline constexpr std::string_view kGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

// The columns of one event that its hash covers.
struct EventFields {
    std::int64_t id = 0;
    std::string_view at;
    std::string_view kind;
    std::optional<std::int64_t> delivery_id;
    std::optional<std::int64_t> run_id;
    std::optional<std::int64_t> attempt_id;
    std::string_view detail;
    std::string_view prev_hash;
};

// The canonical byte string of an event (docs/audit-schema.md, "The hash chain").
std::string canonical_encoding(const EventFields& event);
// Lower-case hex SHA-256 of canonical_encoding(event).
std::string event_hash(const EventFields& event);

// The last event of the chain: the next event gets id + 1 and prev_hash = hash.
struct ChainHead {
    std::int64_t id = 0;
    std::string hash = std::string(kGenesisHash);
};

// Reads the head from the database: the last event, else the latest prune anchor, else the
// genesis head.
Result<ChainHead> load_head(sqlite::Database& db);

// Computes prev_hash and hash of every event in id order. Only for the migration to version 6,
// inside its transaction and before the append-only triggers exist.
Status chain_existing_events(sqlite::Database& db);

// The latest row of audit_anchor.
struct Anchor {
    std::int64_t last_event_id = 0;
    std::string last_hash;
    std::string pruned_at;
    std::string pruned_by;
    std::int64_t deleted_events = 0;
};

// What verify found. `problem` is empty when the chain is intact; otherwise one of
// "modified", "deleted", "inserted", "reordered", and `event_id` names the first event that
// does not fit (or the first missing id).
struct VerifyReport {
    std::int64_t events = 0;
    std::int64_t first_id = 0;
    std::int64_t last_id = 0;
    std::string head_hash = std::string(kGenesisHash);
    std::optional<Anchor> anchor;
    std::string problem;
    std::int64_t event_id = 0;
    std::string message;

    bool intact() const { return problem.empty(); }
};

// Walks the whole chain in one read transaction. Fails (as an error, not a report) only when
// the database cannot be read or has no chain (schema older than version 6).
Result<VerifyReport> verify(sqlite::Database& db);

struct PruneReport {
    std::int64_t deleted_events = 0;
    std::int64_t last_event_id = 0;  // the last pruned event; 0 when nothing was pruned
    std::string last_hash;
    std::int64_t remaining_events = 0;
};

// Deletes the events recorded before `before`, as one prefix of the chain that always leaves
// the latest event in place, and records an anchor row; one write transaction. Refuses when
// the chain does not verify (pruning would destroy the evidence). Appends no event: the
// running daemon keeps the chain head in memory (docs/audit-schema.md).
Result<PruneReport> prune(sqlite::Database& db, const Timestamp& before, const std::string& actor);

}  // namespace runbookd::audit
