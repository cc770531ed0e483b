//! Builds: WorkflowRuns resolved into the steps a build agent runs.

pub mod plan;
