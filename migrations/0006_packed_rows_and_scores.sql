-- A submission's pupil rows, and its scores under each model, are kept as one packed record
-- each (src/storage/packed.rs): an `entries` blob of fixed-width entries in UPN order and a
-- `data` blob of each pupil's stored bytes (exactly the bytes a per-pupil row held, so the
-- digests the audit chain recorded are unchanged). A feed is then a few inserts rather than
-- several index updates per pupil. `pupil_index` follows each child by UPN across schools
-- and terms: it lists the pupils of current submissions only (a superseded submission's
-- entries go when it is superseded), with the school, so a pupil's history is found from
-- the index alone; `riskid audit verify` checks it against the current submissions' rows. The rows and scores already stored are moved into the new tables by the code
-- that runs with this migration (src/storage/migrations.rs), which then drops the old ones.
CREATE TABLE feed_rows (
    submission_id  INTEGER PRIMARY KEY REFERENCES submissions(id),
    pupils         INTEGER NOT NULL,
    entries        BLOB NOT NULL,
    data           BLOB NOT NULL
);
CREATE TABLE pupil_index (
    upn            TEXT NOT NULL,
    term_index     INTEGER NOT NULL,
    submission_id  INTEGER NOT NULL REFERENCES submissions(id),
    urn            INTEGER NOT NULL,
    PRIMARY KEY (upn, term_index, submission_id)
) WITHOUT ROWID;
CREATE INDEX pupil_index_submission ON pupil_index (submission_id);
CREATE TABLE score_sets (
    id             INTEGER PRIMARY KEY,
    submission_id  INTEGER NOT NULL REFERENCES submissions(id),
    model_id       TEXT NOT NULL REFERENCES models(model_id),
    pupils         INTEGER NOT NULL,
    entries        BLOB NOT NULL,
    data           BLOB NOT NULL
);
CREATE UNIQUE INDEX score_sets_pair ON score_sets (submission_id, model_id);
CREATE INDEX score_sets_model ON score_sets (model_id);
