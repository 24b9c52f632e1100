//! Synthetic school-data generator (deterministic by seed).
