//! Namespaces and data planes: no rules beyond the metadata every kind shares. Data planes
//! are referred to by Environments and Releases (see `environment.rs`, `release.rs`).

use troupe_common::pb::v1alpha1 as pb;

use super::Rules;

impl Rules for pb::Namespace {}

impl Rules for pb::DataPlane {}

impl Rules for pb::ClusterDataPlane {}
