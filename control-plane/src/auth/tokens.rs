//! Troupe API tokens for people and CI. (Interface only; being written.)
