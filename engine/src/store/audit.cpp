#include "store/audit.hpp"

#include <fmt/format.h>

#include "common/hash.hpp"

namespace runbookd::audit {
namespace {

using sqlite::Database;
using sqlite::Statement;

constexpr std::string_view kEncodingTag = "runbookd.event.v1\n";
constexpr const char* kEventColumns =
    "id, at, kind, delivery_id, run_id, attempt_id, detail, prev_hash, hash";

void append_field(std::string& out, std::string_view value) {
    out += 'S';
    out += std::to_string(value.size());
    out += ':';
    out += value;
    out += ';';
}

void append_field(std::string& out, const std::optional<std::int64_t>& value) {
    if (!value) {
        out += "N;";
        return;
    }
    append_field(out, std::to_string(*value));
}

// One row of `events` as stored, read with kEventColumns.
struct StoredEvent {
    std::int64_t id = 0;
    std::string at, kind;
    std::optional<std::int64_t> delivery_id, run_id, attempt_id;
    std::string detail, prev_hash, hash;

    static StoredEvent read(const Statement& s) {
        return {s.column_int(0),          s.column_text(1),         s.column_text(2),
                s.column_optional_int(3), s.column_optional_int(4), s.column_optional_int(5),
                s.column_text(6),         s.column_text(7),         s.column_text(8)};
    }
    EventFields fields() const {
        return {id, at, kind, delivery_id, run_id, attempt_id, detail, prev_hash};
    }
};

Result<std::int64_t> single_int(Database& db, std::string_view sql,
                                std::optional<std::string_view> text = std::nullopt) {
    auto stmt = Statement::prepare(db, sql);
    if (!stmt) {
        return stmt.error();
    }
    if (text) {
        stmt->bind(1, *text);
    }
    auto row = stmt->step();
    if (!row) {
        return row.error();
    }
    return *row ? stmt->column_int(0) : 0;
}

Result<std::int64_t> schema_version(Database& db) {
    auto version = single_int(db, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (!version) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("reading the audit chain failed: not a runbookd database "
                                      "({})",
                                      version.error().message));
    }
    return version;
}

Result<std::optional<Anchor>> read_anchor(Database& db) {
    auto stmt = Statement::prepare(db,
                                   "SELECT last_event_id, last_hash, pruned_at, pruned_by, "
                                   "deleted_events FROM audit_anchor ORDER BY id DESC LIMIT 1");
    if (!stmt) {
        return stmt.error();
    }
    auto row = stmt->step();
    if (!row) {
        return row.error();
    }
    if (!*row) {
        return std::optional<Anchor>();
    }
    return std::optional<Anchor>(Anchor{stmt->column_int(0), stmt->column_text(1),
                                        stmt->column_text(2), stmt->column_text(3),
                                        stmt->column_int(4)});
}

// The id of an event other than `id` and the one before it whose stored hash is `hash`; 0
// when none.
std::int64_t event_with_hash(Database& db, const std::string& hash, std::int64_t id) {
    auto stmt = Statement::prepare(
        db, "SELECT id FROM events WHERE hash = ?1 AND id NOT IN (?2, ?2 - 1) LIMIT 1");
    if (!stmt) {
        return 0;
    }
    stmt->bind(1, std::string_view(hash)).bind(2, id);
    auto row = stmt->step();
    return row && *row ? stmt->column_int(0) : 0;
}

// Checks one event against what the chain expects at its place; fills the report's problem.
void check_event(Database& db, const StoredEvent& e, std::int64_t expected_id,
                 const std::string& expected_prev, VerifyReport& report) {
    const auto fail = [&report](std::string problem, std::int64_t id, std::string message) {
        report.problem = std::move(problem);
        report.event_id = id;
        report.message = std::move(message);
    };
    if (e.id != expected_id) {
        const std::string missing =
            e.id - 1 == expected_id
                ? fmt::format("event {} is missing", expected_id)
                : fmt::format("events {} to {} are missing", expected_id, e.id - 1);
        fail("deleted", expected_id,
             fmt::format("{} (deleted): the chain goes on at event {}", missing, e.id));
        return;
    }
    if (event_hash(e.fields()) != e.hash) {
        // Content that belongs elsewhere in the chain links to a predecessor that is not the
        // event before it.
        const std::int64_t linked = event_with_hash(db, e.prev_hash, e.id);
        if (linked != 0) {
            fail("reordered", e.id,
                 fmt::format("event {} holds content from another position: its prev_hash is the "
                             "hash now stored on event {}; events were reordered",
                             e.id, linked));
        } else {
            fail("modified", e.id,
                 fmt::format("event {} was modified: its hash does not match its content", e.id));
        }
        return;
    }
    if (e.prev_hash != expected_prev) {
        const std::string before = report.events == 0
                                       ? std::string("the prune anchor or chain start")
                                       : fmt::format("event {}", e.id - 1);
        fail("inserted", e.id,
             fmt::format("event {} does not follow {}: its prev_hash is not that hash; an event "
                         "before it was replaced or inserted",
                         e.id, before));
    }
}

Status check_chain_schema(Database& db) {
    auto version = schema_version(db);
    if (!version) {
        return version.error();
    }
    if (*version < 6) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("reading the audit chain failed: the database has schema "
                                      "version {}; the chain starts at version 6 (start runbookd "
                                      "on it once to migrate)",
                                      *version));
    }
    return {};
}

Result<VerifyReport> walk_chain(Database& db) {
    if (auto s = check_chain_schema(db); !s) {
        return s.error();
    }
    VerifyReport report;
    auto anchor = read_anchor(db);
    if (!anchor) {
        return anchor.error();
    }
    report.anchor = std::move(*anchor);
    std::int64_t expected_id = report.anchor ? report.anchor->last_event_id + 1 : 1;
    std::string expected_prev =
        report.anchor ? report.anchor->last_hash : std::string(kGenesisHash);
    report.head_hash = expected_prev;
    auto stmt =
        Statement::prepare(db, fmt::format("SELECT {} FROM events ORDER BY id", kEventColumns));
    if (!stmt) {
        return stmt.error();
    }
    for (;;) {
        auto row = stmt->step();
        if (!row) {
            return row.error();
        }
        if (!*row) {
            break;
        }
        const StoredEvent e = StoredEvent::read(*stmt);
        check_event(db, e, expected_id, expected_prev, report);
        if (!report.intact()) {
            return report;
        }
        report.first_id = report.events == 0 ? e.id : report.first_id;
        report.last_id = e.id;
        report.head_hash = e.hash;
        ++report.events;
        expected_id = e.id + 1;
        expected_prev = e.hash;
    }
    if (report.anchor && report.events == 0) {
        report.problem = "deleted";
        report.event_id = expected_id;
        report.message = fmt::format(
            "event {} is missing (deleted): no event follows the prune "
            "anchor, and prune always keeps the latest event",
            expected_id);
    }
    return report;
}

Result<std::optional<StoredEvent>> read_event(Database& db, std::int64_t id) {
    auto stmt =
        Statement::prepare(db, fmt::format("SELECT {} FROM events WHERE id = ?", kEventColumns));
    if (!stmt) {
        return stmt.error();
    }
    stmt->bind(1, id);
    auto row = stmt->step();
    if (!row) {
        return row.error();
    }
    return *row ? std::optional<StoredEvent>(StoredEvent::read(*stmt)) : std::nullopt;
}

// The last id to prune: the event before the first one recorded at or after `before` (a prefix
// of the chain, whatever order the times of later events are in), and never the latest event.
Result<std::int64_t> prune_through(Database& db, const std::string& before) {
    auto last = single_int(db, "SELECT coalesce(max(id), 0) FROM events");
    if (!last) {
        return last.error();
    }
    auto first_kept = single_int(db,
                                 "SELECT coalesce((SELECT id FROM events WHERE at >= ? ORDER BY "
                                 "id LIMIT 1), (SELECT coalesce(max(id), 0) + 1 FROM events))",
                                 before);
    if (!first_kept) {
        return first_kept.error();
    }
    return std::min(*first_kept - 1, *last - 1);
}

// Deletes events up to `through` inside the open transaction and records the anchor.
Result<PruneReport> delete_prefix(Database& db, const StoredEvent& last_pruned,
                                  const std::string& before, const std::string& actor) {
    PruneReport report;
    auto guard = Statement::prepare(db, "INSERT INTO audit_prune_guard (through_id) VALUES (?)");
    if (!guard) {
        return guard.error();
    }
    if (auto s = guard->bind(1, last_pruned.id).run(); !s) {
        return s.error();
    }
    if (auto s = db.exec(fmt::format("DELETE FROM events WHERE id <= {}", last_pruned.id)); !s) {
        return s.error();
    }
    report.deleted_events = sqlite3_changes(db.handle());
    if (auto s = db.exec("DELETE FROM audit_prune_guard"); !s) {
        return s.error();
    }
    auto anchor = Statement::prepare(
        db,
        "INSERT INTO audit_anchor (pruned_at, pruned_by, before, deleted_events, last_event_id, "
        "last_hash) VALUES (?,?,?,?,?,?)");
    if (!anchor) {
        return anchor.error();
    }
    const std::string now = Timestamp::now().to_rfc3339_millis();
    if (auto s = anchor->bind(1, std::string_view(now))
                     .bind(2, std::string_view(actor))
                     .bind(3, std::string_view(before))
                     .bind(4, report.deleted_events)
                     .bind(5, last_pruned.id)
                     .bind(6, std::string_view(last_pruned.hash))
                     .run();
        !s) {
        return s.error();
    }
    report.last_event_id = last_pruned.id;
    report.last_hash = last_pruned.hash;
    return report;
}

// Inside the write transaction: the event the anchor will name, checked again (only appends
// may have happened since the verify), then the delete.
Result<PruneReport> prune_locked(Database& db, const std::string& before,
                                 const std::string& actor) {
    auto through = prune_through(db, before);
    if (!through) {
        return through.error();
    }
    auto first = single_int(db, "SELECT coalesce(min(id), 0) FROM events");
    if (!first) {
        return first.error();
    }
    if (*first == 0 || *through < *first) {
        return PruneReport{};
    }
    auto last_pruned = read_event(db, *through);
    auto next = read_event(db, *through + 1);
    if (!last_pruned || !next) {
        return !last_pruned ? last_pruned.error() : next.error();
    }
    if (!*last_pruned || !*next || event_hash((*last_pruned)->fields()) != (*last_pruned)->hash ||
        (*next)->prev_hash != (*last_pruned)->hash) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("pruning the audit chain failed: events {} and {} changed "
                                      "while pruning; run audit verify",
                                      *through, *through + 1));
    }
    return delete_prefix(db, **last_pruned, before, actor);
}

}  // namespace

std::string canonical_encoding(const EventFields& e) {
    std::string out;
    out.reserve(kEncodingTag.size() + e.at.size() + e.kind.size() + e.detail.size() +
                e.prev_hash.size() + 96);
    out += kEncodingTag;
    append_field(out, std::optional<std::int64_t>(e.id));
    append_field(out, e.at);
    append_field(out, e.kind);
    append_field(out, e.delivery_id);
    append_field(out, e.run_id);
    append_field(out, e.attempt_id);
    append_field(out, e.detail);
    append_field(out, e.prev_hash);
    return out;
}

std::string event_hash(const EventFields& event) {
    return sha256_hex(canonical_encoding(event));
}

Result<ChainHead> load_head(Database& db) {
    auto stmt = Statement::prepare(db, "SELECT id, hash FROM events ORDER BY id DESC LIMIT 1");
    if (!stmt) {
        return stmt.error();
    }
    auto row = stmt->step();
    if (!row) {
        return row.error();
    }
    if (*row) {
        return ChainHead{stmt->column_int(0), stmt->column_text(1)};
    }
    auto anchor = read_anchor(db);
    if (!anchor) {
        return anchor.error();
    }
    if (*anchor) {
        return ChainHead{(*anchor)->last_event_id, (*anchor)->last_hash};
    }
    return ChainHead{};
}

Status chain_existing_events(Database& db) {
    auto select =
        Statement::prepare(db, fmt::format("SELECT {} FROM events ORDER BY id", kEventColumns));
    auto update = Statement::prepare(db, "UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?");
    if (!select || !update) {
        return !select ? select.error() : update.error();
    }
    std::string prev(kGenesisHash);
    for (;;) {
        auto row = select->step();
        if (!row) {
            return row.error();
        }
        if (!*row) {
            return {};
        }
        StoredEvent e = StoredEvent::read(*select);
        e.prev_hash = prev;
        std::string hash = event_hash(e.fields());
        if (auto s = update->bind(1, std::string_view(prev))
                         .bind(2, std::string_view(hash))
                         .bind(3, e.id)
                         .run();
            !s) {
            return s;
        }
        prev = std::move(hash);
    }
}

Result<VerifyReport> verify(Database& db) {
    // One read transaction: a consistent snapshot while runbookd appends (WAL).
    if (auto s = db.exec("BEGIN"); !s) {
        return s.error();
    }
    auto report = walk_chain(db);
    (void)db.exec("COMMIT");
    return report;
}

Result<PruneReport> prune(Database& db, const Timestamp& before, const std::string& actor) {
    // Verify first, outside the write lock (a long walk must not hold runbookd's writer up):
    // pruning a broken chain would destroy the evidence of what was changed.
    auto verified = verify(db);
    if (!verified) {
        return verified.error();
    }
    if (!verified->intact()) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("pruning the audit chain refused: it does not verify: {}",
                                      verified->message));
    }
    if (auto s = db.exec("BEGIN IMMEDIATE"); !s) {
        return s.error();
    }
    auto report = prune_locked(db, before.to_rfc3339_millis(), actor);
    if (!report) {
        (void)db.exec("ROLLBACK");
        return report;
    }
    if (auto s = db.exec("COMMIT"); !s) {
        (void)db.exec("ROLLBACK");
        return s.error();
    }
    auto remaining = single_int(db, "SELECT count(*) FROM events");
    report->remaining_events = remaining ? *remaining : 0;
    return report;
}

}  // namespace runbookd::audit
