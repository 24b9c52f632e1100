-- API keys: only the SHA-256 of a key is stored; the key itself is shown once at creation.
CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'analyst', 'school', 'link_worker', 'service')),
    label       TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE api_key_schools (
    key_id  INTEGER NOT NULL REFERENCES api_keys(id),
    urn     INTEGER NOT NULL,
    PRIMARY KEY (key_id, urn)
);

-- One row per accepted feed. Rejected feeds are never stored.
CREATE TABLE submissions (
    id              INTEGER PRIMARY KEY,
    urn             INTEGER NOT NULL,
    term_index      INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('current', 'superseded')),
    source          TEXT NOT NULL CHECK (source IN ('csv', 'records')),
    content_sha256  TEXT NOT NULL,
    row_count       INTEGER NOT NULL,
    warning_count   INTEGER NOT NULL,
    warnings_json   TEXT NOT NULL,
    received_at     INTEGER NOT NULL,
    key_id          INTEGER NOT NULL REFERENCES api_keys(id),
    request_id      TEXT,
    supersedes      INTEGER REFERENCES submissions(id),
    superseded_by   INTEGER REFERENCES submissions(id)
);
CREATE UNIQUE INDEX submissions_one_current ON submissions (urn, term_index) WHERE state = 'current';
CREATE UNIQUE INDEX submissions_request ON submissions (key_id, request_id) WHERE request_id IS NOT NULL;

-- Pupil rows of every stored submission; history joins by UPN across schools.
CREATE TABLE pupil_terms (
    submission_id  INTEGER NOT NULL REFERENCES submissions(id),
    upn            TEXT NOT NULL,
    urn            INTEGER NOT NULL,
    term_index     INTEGER NOT NULL,
    row_json       TEXT NOT NULL,
    -- A rowid table: rows are a few hundred bytes of JSON, large for WITHOUT ROWID pages.
    PRIMARY KEY (submission_id, upn)
);
CREATE INDEX pupil_terms_upn ON pupil_terms (upn, term_index);
