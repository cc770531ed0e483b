//! The server's own state, the part every replica must share: the CA, the bootstrap admin
//! token, agent join tokens, API tokens, push-webhook secrets and build logs. (The objects are
//! the store's; the audit log stays each server's own.)
//!
//! [`StateHome`] says where that state lives. One server keeps it in files of its data
//! directory, or in memory without one ([`StateHome::Local`]), in the formats each owner has
//! always written. Servers on etcd keep it in etcd under the store's prefix, `PREFIX/s/…`
//! ([`StateHome::Etcd`], [`EtcdState`]): beside the objects (`PREFIX/o/…`), never among them,
//! so the object API, watches and the event log do not see it.
//!
//! Build logs are read from etcd when asked for and followed with a watch on one run's log
//! ([`EtcdState::page`], [`EtcdState::on_change`]); see `builds::logs`.
//!
//! Each owner (the agents' PKI and join tokens, the API tokens, the builds' webhook secrets)
//! keeps its decoded copy in memory and answers from it. On etcd
//! it writes through to etcd before it answers, follows the other replicas' writes with a
//! watch (milliseconds behind), and reads one key on a miss, so that a token another replica
//! made a moment ago is found although its watch event has not come yet. Values made once for
//! the whole cluster (the CA, the admin token) are created if absent in one etcd transaction:
//! replicas starting together on an empty etcd all end up with the winner's.

#[cfg(feature = "etcd")]
mod etcd;

use std::path::{Path, PathBuf};

#[cfg(feature = "etcd")]
pub use etcd::{Change, EtcdState, Item, Write};

/// Where the server keeps the state its replicas share.
#[derive(Clone)]
pub enum StateHome {
    /// Files in this data directory, or memory without one: a server alone.
    Local(Option<PathBuf>),
    /// etcd, under the store's prefix: every replica on that store. The data directory, if
    /// any, gets copies for people and tools to read (`pki/ca.crt`, `admin.token`).
    #[cfg(feature = "etcd")]
    Etcd {
        /// The state in etcd.
        state: EtcdState,
        /// Where the copies go.
        data_dir: Option<PathBuf>,
    },
}

impl StateHome {
    /// The data directory, if the server has one.
    pub fn data_dir(&self) -> Option<&Path> {
        match self {
            StateHome::Local(dir) => dir.as_deref(),
            #[cfg(feature = "etcd")]
            StateHome::Etcd { data_dir, .. } => data_dir.as_deref(),
        }
    }

    /// The state in etcd, when it lives there.
    #[cfg(feature = "etcd")]
    pub fn etcd(&self) -> Option<&EtcdState> {
        match self {
            StateHome::Local(_) => None,
            StateHome::Etcd { state, .. } => Some(state),
        }
    }
}
