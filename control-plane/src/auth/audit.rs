//! The audit log. (Interface only; being written.)
