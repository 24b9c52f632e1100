//! Features, training, evaluation, fairness, artifacts.
