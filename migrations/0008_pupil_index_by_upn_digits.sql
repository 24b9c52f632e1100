-- The UPN index is keyed by each UPN with its check letter moved to the end (`upn_key`).
-- A UPN's first character is its check letter, a checksum of the rest, so keyed by the UPN
-- as written one school's pupils were spread over the whole index: a feed's few hundred
-- pupils dirtied a page of it each, and the commit wrote every one of those pages. The
-- digits after the letter are the local authority, the school that first gave the UPN, the
-- year and a serial, so by them a school's pupils (who mostly came from a few schools in a
-- few years) sit together, and a feed touches a few pages. The key is the UPN rotated by one
-- character, so each is the other's exact inverse; nothing else changes.
CREATE TABLE pupil_index_v8 (
    upn_key        TEXT NOT NULL,
    term_index     INTEGER NOT NULL,
    submission_id  INTEGER NOT NULL REFERENCES submissions(id),
    urn            INTEGER NOT NULL,
    PRIMARY KEY (upn_key, term_index, submission_id)
) WITHOUT ROWID;
INSERT INTO pupil_index_v8 (upn_key, term_index, submission_id, urn)
    SELECT substr(upn, 2) || substr(upn, 1, 1), term_index, submission_id, urn FROM pupil_index
    ORDER BY 1, 2, 3;
DROP TABLE pupil_index;
ALTER TABLE pupil_index_v8 RENAME TO pupil_index;
