-- A Common Transfer File with its supplement is a third source of a submission. SQLite cannot
-- change a CHECK constraint in place, so the table is rebuilt (foreign keys are not enforced on
-- migrations, see src/storage/migrations.rs, and every reference is by the table name, which is kept).
CREATE TABLE submissions_v4 (
    id              INTEGER PRIMARY KEY,
    urn             INTEGER NOT NULL,
    term_index      INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('current', 'superseded')),
    source          TEXT NOT NULL CHECK (source IN ('csv', 'records', 'ctf')),
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
INSERT INTO submissions_v4 (id, urn, term_index, state, source, content_sha256, row_count, warning_count,
                            warnings_json, received_at, key_id, request_id, supersedes, superseded_by)
    SELECT id, urn, term_index, state, source, content_sha256, row_count, warning_count,
           warnings_json, received_at, key_id, request_id, supersedes, superseded_by FROM submissions;
DROP TABLE submissions;
ALTER TABLE submissions_v4 RENAME TO submissions;
CREATE UNIQUE INDEX submissions_one_current ON submissions (urn, term_index) WHERE state = 'current';
CREATE UNIQUE INDEX submissions_request ON submissions (key_id, request_id) WHERE request_id IS NOT NULL;
