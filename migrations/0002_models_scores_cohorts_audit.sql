-- Model artifacts (JSON, byte-for-byte as trained). At most one is active.
CREATE TABLE models (
    model_id       TEXT PRIMARY KEY,
    artifact_json  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    active         INTEGER NOT NULL DEFAULT 0,
    activated_at   INTEGER
);
CREATE UNIQUE INDEX models_one_active ON models (active) WHERE active = 1;

-- One score per pupil, school, term and model; explanation JSON holds probabilities, bands,
-- reasons and flags exactly as shown to people.
CREATE TABLE scores (
    urn              INTEGER NOT NULL,
    term_index       INTEGER NOT NULL,
    upn              TEXT NOT NULL,
    model_id         TEXT NOT NULL REFERENCES models(model_id),
    submission_id    INTEGER NOT NULL REFERENCES submissions(id),
    priority         REAL NOT NULL,
    explanation_json TEXT NOT NULL,
    -- A rowid table: explanations are ~1.5 KB, too large for WITHOUT ROWID's B-tree pages.
    PRIMARY KEY (urn, term_index, model_id, upn)
);
CREATE INDEX scores_upn ON scores (upn, term_index);

CREATE TABLE cohorts (
    id              INTEGER PRIMARY KEY,
    urn             INTEGER NOT NULL,
    term_index      INTEGER NOT NULL,
    model_id        TEXT NOT NULL,
    params_json     TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('proposed', 'in_review', 'finalised', 'replaced')),
    created_at      INTEGER NOT NULL,
    created_by      INTEGER NOT NULL,
    finalised_at    INTEGER,
    over_capacity_reason TEXT,
    -- Exclusive: the programme runs for terms in [term_index, programme_end).
    programme_end   INTEGER
);
CREATE UNIQUE INDEX cohorts_one_open ON cohorts (urn, term_index) WHERE state IN ('proposed', 'in_review', 'finalised');

CREATE TABLE cohort_members (
    cohort_id     INTEGER NOT NULL REFERENCES cohorts(id),
    upn           TEXT NOT NULL,
    proposed      INTEGER NOT NULL,
    rank          INTEGER,
    priority      REAL,
    shown_json    TEXT NOT NULL,
    decision      TEXT,
    reason_code   TEXT,
    note          TEXT,
    decided_by    INTEGER,
    decided_at    INTEGER,
    PRIMARY KEY (cohort_id, upn)
) WITHOUT ROWID;

-- Idempotency for mutations: a repeated (key, request id) returns the stored result.
CREATE TABLE request_results (
    key_id       INTEGER NOT NULL,
    request_id   TEXT NOT NULL,
    method       TEXT NOT NULL,
    result_json  TEXT NOT NULL,
    PRIMARY KEY (key_id, request_id)
);

-- Append-only, hash-chained audit trail.
CREATE TABLE audit_events (
    seq          INTEGER PRIMARY KEY,
    event_json   TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_events BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_events BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
