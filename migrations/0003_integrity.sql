-- Each audit event's hash, authenticated with the audit key kept outside the database.
ALTER TABLE audit_events ADD COLUMN mac TEXT NOT NULL DEFAULT '';

-- Idempotency for every mutation: (key, method, request id) → the request's fingerprint and
-- the first result. A repeat with another fingerprint is refused.
DROP TABLE request_results;
CREATE TABLE request_results (
    key_id       INTEGER NOT NULL,
    method       TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    result_json  TEXT NOT NULL,
    PRIMARY KEY (key_id, method, request_id)
);

-- Durable to-do list of submissions to score with a model: written with an activation in one
-- transaction, drained by the activation and, after a crash, at start-up.
CREATE TABLE score_queue (
    submission_id  INTEGER NOT NULL REFERENCES submissions(id),
    model_id       TEXT NOT NULL REFERENCES models(model_id),
    PRIMARY KEY (submission_id, model_id)
);

-- Scores are kept per submission and model: a superseded submission keeps what was shown.
CREATE TABLE scores_v3 (
    urn              INTEGER NOT NULL,
    term_index       INTEGER NOT NULL,
    upn              TEXT NOT NULL,
    model_id         TEXT NOT NULL REFERENCES models(model_id),
    submission_id    INTEGER NOT NULL REFERENCES submissions(id),
    priority         REAL NOT NULL,
    explanation_json TEXT NOT NULL,
    -- What ranking needs, as columns: a proposal reads these, not the explanations.
    ncyear           INTEGER NOT NULL DEFAULT 0,
    statutory        INTEGER NOT NULL DEFAULT 0,
    p_absence        REAL NOT NULL DEFAULT 0,
    p_suspension     REAL NOT NULL DEFAULT 0,
    p_referral       REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (submission_id, model_id, upn)
);
INSERT INTO scores_v3 (urn, term_index, upn, model_id, submission_id, priority, explanation_json)
    SELECT urn, term_index, upn, model_id, submission_id, priority, explanation_json FROM scores;
DROP TABLE scores;
ALTER TABLE scores_v3 RENAME TO scores;
CREATE INDEX scores_upn ON scores (upn, term_index);

-- The model whose scores people are shown for each submission: scores are kept per model,
-- and an earlier term keeps the scores that were live then.
CREATE TABLE live_scores (
    submission_id  INTEGER PRIMARY KEY REFERENCES submissions(id),
    model_id       TEXT NOT NULL REFERENCES models(model_id)
);
-- Existing scores: the model that scored each submission last (SQLite takes the bare column
-- from the row with the largest rowid).
INSERT INTO live_scores (submission_id, model_id)
    SELECT submission_id, model_id FROM (SELECT submission_id, model_id, MAX(rowid) FROM scores GROUP BY submission_id);
