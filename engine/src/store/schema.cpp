#include "store/schema.hpp"

#include "store/audit.hpp"

namespace runbookd::schema {

// The tables are a public interface (docs/audit-schema.md): users query them with sqlite3.
// Times are RFC 3339 text in UTC; label sets and lists are JSON text.
const std::vector<Migration>& migrations() {
    static const std::vector<Migration> all = {
        {1, "deliveries, alerts, runbook versions, runs, attempts and events", R"sql(
CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    received_at      TEXT NOT NULL,
    source           TEXT NOT NULL,
    remote_addr      TEXT NOT NULL,
    user_agent       TEXT NOT NULL,
    receiver         TEXT NOT NULL,
    group_key        TEXT NOT NULL,
    status           TEXT NOT NULL,
    external_url     TEXT NOT NULL,
    body_bytes       INTEGER NOT NULL,
    body_sha256      TEXT NOT NULL,
    alert_count      INTEGER NOT NULL,
    truncated_alerts INTEGER NOT NULL,
    warnings         TEXT NOT NULL
) STRICT;

CREATE TABLE alerts (
    id             INTEGER PRIMARY KEY,
    delivery_id    INTEGER NOT NULL REFERENCES deliveries(id),
    position       INTEGER NOT NULL,
    fingerprint    TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    starts_at      TEXT NOT NULL,
    ends_at        TEXT,
    labels         TEXT NOT NULL,
    annotations    TEXT NOT NULL,
    generator_url  TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    outcome_detail TEXT NOT NULL
) STRICT;

CREATE TABLE runbook_versions (
    content_hash    TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    source_file     TEXT NOT NULL,
    source          TEXT NOT NULL,
    first_loaded_at TEXT NOT NULL
) STRICT;

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    runbook      TEXT NOT NULL,
    runbook_hash TEXT NOT NULL REFERENCES runbook_versions(content_hash),
    trigger      TEXT NOT NULL CHECK (trigger IN ('alert', 'manual')),
    alert_id     INTEGER REFERENCES alerts(id),
    actor        TEXT NOT NULL,
    state        TEXT NOT NULL
                 CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    reason       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT
) STRICT;
CREATE INDEX runs_by_runbook ON runs (runbook, id);

CREATE TABLE attempts (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES runs(id),
    step           TEXT NOT NULL,
    step_index     INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    argv           TEXT NOT NULL,
    cwd            TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    exit_code      INTEGER,
    signal         INTEGER,
    error          TEXT NOT NULL,
    started_at     TEXT NOT NULL,
    finished_at    TEXT,
    duration_ms    INTEGER,
    stdout_bytes   INTEGER,
    stderr_bytes   INTEGER,
    stdout_excerpt BLOB,
    stderr_excerpt BLOB,
    UNIQUE (run_id, step_index, attempt)
) STRICT;

CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    delivery_id INTEGER REFERENCES deliveries(id),
    run_id      INTEGER REFERENCES runs(id),
    attempt_id  INTEGER REFERENCES attempts(id),
    detail      TEXT NOT NULL
) STRICT;
)sql"},
        {2, "attempt output files and who cancelled a run", R"sql(
ALTER TABLE attempts ADD COLUMN output_path TEXT;
ALTER TABLE attempts ADD COLUMN output_bytes INTEGER;
ALTER TABLE attempts ADD COLUMN output_truncated INTEGER;
ALTER TABLE runs ADD COLUMN cancelled_by TEXT;
)sql"},
        {3, "alert episodes: one run per runbook and episode", R"sql(
CREATE TABLE episodes (
    runbook      TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    starts_at_ns INTEGER NOT NULL,
    starts_at    TEXT NOT NULL,
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    PRIMARY KEY (runbook, fingerprint, status, starts_at_ns)
) STRICT, WITHOUT ROWID;
)sql"},
        {4, "the process of each attempt, for recovery after a crash", R"sql(
ALTER TABLE attempts ADD COLUMN pid INTEGER;
ALTER TABLE attempts ADD COLUMN pid_start_ticks INTEGER;
)sql"},
        {5, "cooldowns and run budgets: the key and time of each episode's run", R"sql(
ALTER TABLE episodes ADD COLUMN dedup_key TEXT NOT NULL DEFAULT '';
ALTER TABLE episodes ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX episodes_by_key ON episodes (runbook, dedup_key, created_ms);
)sql"},
        // The chain is computed in code (SHA-256), before the triggers forbid updating events.
        {6, "tamper-evident audit: hash chain over events, prune anchors, append-only triggers",
         R"sql(
ALTER TABLE events ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN hash TEXT NOT NULL DEFAULT '';
CREATE TABLE audit_anchor (
    id             INTEGER PRIMARY KEY,
    pruned_at      TEXT NOT NULL,
    pruned_by      TEXT NOT NULL,
    before         TEXT NOT NULL,
    deleted_events INTEGER NOT NULL,
    last_event_id  INTEGER NOT NULL,
    last_hash      TEXT NOT NULL
) STRICT;
CREATE TABLE audit_prune_guard (through_id INTEGER NOT NULL) STRICT;
)sql",
         audit::chain_existing_events, R"sql(
CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only: UPDATE of events is refused');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN NOT EXISTS (SELECT 1 FROM audit_prune_guard WHERE OLD.id <= through_id) BEGIN
    SELECT RAISE(ABORT,
        'audit events are append-only: DELETE of events is refused (see runbookctl audit prune)');
END;
CREATE TRIGGER audit_anchor_no_update BEFORE UPDATE ON audit_anchor BEGIN
    SELECT RAISE(ABORT, 'audit anchors are append-only: UPDATE of audit_anchor is refused');
END;
CREATE TRIGGER audit_anchor_no_delete BEFORE DELETE ON audit_anchor BEGIN
    SELECT RAISE(ABORT, 'audit anchors are append-only: DELETE of audit_anchor is refused');
END;
)sql"},
        {7,
         "interrupted runs, attempts of unknown outcome, resolved episodes",
         R"sql(
CREATE TABLE runs_v7 (
    id           INTEGER PRIMARY KEY,
    runbook      TEXT NOT NULL,
    runbook_hash TEXT NOT NULL REFERENCES runbook_versions(content_hash),
    trigger      TEXT NOT NULL CHECK (trigger IN ('alert', 'manual')),
    alert_id     INTEGER REFERENCES alerts(id),
    actor        TEXT NOT NULL,
    state        TEXT NOT NULL
                 CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled',
                                  'interrupted')),
    reason       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    cancelled_by TEXT
) STRICT;
INSERT INTO runs_v7 SELECT id, runbook, runbook_hash, trigger, alert_id, actor, state, reason,
    created_at, started_at, finished_at, cancelled_by FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v7 RENAME TO runs;
CREATE INDEX runs_by_runbook ON runs (runbook, id);

CREATE TABLE attempts_v7 (
    id               INTEGER PRIMARY KEY,
    run_id           INTEGER NOT NULL REFERENCES runs(id),
    step             TEXT NOT NULL,
    step_index       INTEGER NOT NULL,
    attempt          INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    argv             TEXT NOT NULL,
    cwd              TEXT NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state IN ('running', 'succeeded', 'failed', 'outcome_unknown')),
    exit_code        INTEGER,
    signal           INTEGER,
    error            TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    duration_ms      INTEGER,
    stdout_bytes     INTEGER,
    stderr_bytes     INTEGER,
    stdout_excerpt   BLOB,
    stderr_excerpt   BLOB,
    output_path      TEXT,
    output_bytes     INTEGER,
    output_truncated INTEGER,
    pid              INTEGER,
    pid_start_ticks  INTEGER,
    UNIQUE (run_id, step_index, attempt)
) STRICT;
INSERT INTO attempts_v7 SELECT id, run_id, step, step_index, attempt, kind, argv, cwd, state,
    exit_code, signal, error, started_at, finished_at, duration_ms, stdout_bytes, stderr_bytes,
    stdout_excerpt, stderr_excerpt, output_path, output_bytes, output_truncated, pid,
    pid_start_ticks FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_v7 RENAME TO attempts;

ALTER TABLE episodes ADD COLUMN resolved_ms INTEGER;
)sql",
         nullptr,
         {},
         true},
        {8, "resolved alerts: a firing notification that arrives after the resolved one is stale",
         R"sql(
CREATE TABLE resolved_alerts (
    fingerprint  TEXT NOT NULL,
    starts_at_ns INTEGER NOT NULL,
    resolved_ms  INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, starts_at_ns)
) STRICT, WITHOUT ROWID;
)sql"},
        {9, "step outputs: what each attempt handed to later steps", R"sql(
ALTER TABLE attempts ADD COLUMN outputs TEXT;
)sql"},
        // Every column runs has; a branch that adds columns to runs adds them to this copy too.
        {10,
         "approvals: runs waiting for a human before a gated step",
         R"sql(
CREATE TABLE runs_v10 (
    id           INTEGER PRIMARY KEY,
    runbook      TEXT NOT NULL,
    runbook_hash TEXT NOT NULL REFERENCES runbook_versions(content_hash),
    trigger      TEXT NOT NULL CHECK (trigger IN ('alert', 'manual')),
    alert_id     INTEGER REFERENCES alerts(id),
    actor        TEXT NOT NULL,
    state        TEXT NOT NULL
                 CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled',
                                  'interrupted', 'waiting_approval')),
    reason       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    cancelled_by TEXT
) STRICT;
INSERT INTO runs_v10 SELECT id, runbook, runbook_hash, trigger, alert_id, actor, state, reason,
    created_at, started_at, finished_at, cancelled_by FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v10 RENAME TO runs;
CREATE INDEX runs_by_runbook ON runs (runbook, id);

CREATE TABLE approvals (
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    step_index   INTEGER NOT NULL,
    step         TEXT NOT NULL,
    approvers    TEXT NOT NULL,
    message      TEXT NOT NULL,
    on_timeout   TEXT NOT NULL CHECK (on_timeout IN ('deny', 'approve')),
    requested_at TEXT NOT NULL,
    deadline     TEXT NOT NULL,
    state        TEXT NOT NULL
                 CHECK (state IN ('pending', 'approved', 'denied', 'timed_out', 'cancelled')),
    decided_by   TEXT,
    decided_at   TEXT,
    comment      TEXT,
    PRIMARY KEY (run_id, step_index)
) STRICT;
)sql",
         nullptr,
         {},
         true},
        {11, "manual runs: labels, params, dry runs, reasons and idempotency keys", R"sql(
ALTER TABLE runs ADD COLUMN labels TEXT;
ALTER TABLE runs ADD COLUMN params TEXT;
ALTER TABLE runs ADD COLUMN dry_run INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN request_reason TEXT;
ALTER TABLE runs ADD COLUMN idempotency_key TEXT;
ALTER TABLE runs ADD COLUMN request_sha256 TEXT;
CREATE UNIQUE INDEX runs_by_idempotency_key ON runs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
)sql"},
        {12, "trace context: the traceparent a delivery brought and each run's own", R"sql(
ALTER TABLE deliveries ADD COLUMN traceparent TEXT;
ALTER TABLE runs ADD COLUMN traceparent TEXT;
)sql"},
    };
    return all;
}

}  // namespace runbookd::schema
