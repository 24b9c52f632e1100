//! Tests of the outcome estimate and its publication.
