-- Pupil rows and scores are now stored as postcard blobs (compact binary serde; see
-- src/storage/codec.rs) rather than JSON text: the columns are renamed to say so. Rows and
-- scores written before this migration stay JSON text and are still read; digests cover the
-- stored bytes either way, so nothing stored needs rewriting.
ALTER TABLE pupil_terms RENAME COLUMN row_json TO row_data;
ALTER TABLE scores RENAME COLUMN explanation_json TO explanation;
-- A pupil's scores are found through pupil_terms' UPN index: the scores table's own UPN
-- index made every feed's inserts touch (and write to the WAL) one index page per pupil.
DROP INDEX scores_upn;
