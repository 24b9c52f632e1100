-- The UPN index is kept by its primary key (upn, term_index, submission_id) alone. Its
-- second index, by submission, cost every stored pupil a second B-tree insert inside the
-- write lock, to serve one statement: removing a superseded submission's entries, which now
-- finds them by their keys (the submission's UPNs come from its own packed rows).
DROP INDEX pupil_index_submission;
