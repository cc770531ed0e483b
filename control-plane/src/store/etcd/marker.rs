//! The marker: one key, `PREFIX/store`, that makes a prefix a store. Every open writes it
//! again (creating it, and so the store, the first time), which gives the open a revision
//! with an event under the prefix to load at and to start the tail after.
//!
//! Its value says the store's format, and, for a store imported from another one (`troupe
//! migrate`), where its revisions continue and where its history starts:
//!
//! - `troupe-store 1`: a store made here. Its revisions count from the marker's creation, the
//!   first commit being 1.
//! - `troupe-store 1 importing after=H`: an import under way, or one that died part way.
//!   Only the import opens it; a server is refused, with what to do.
//! - `troupe-store 1 after=H history-from=F`: an imported store. Revisions go on from the
//!   last one of the store it came from (H), so none a client saw there comes again for
//!   something else; history before F (the end of the import) is not here, and a watch from
//!   before it is told the revision was compacted, as it would be anywhere else.
//! - `troupe-store 1 moved-out after=H history-from=F`: a store moved into a data directory
//!   (`troupe migrate --from-etcd`), or being moved. A server is refused, so nothing
//!   written here is lost to the server on the data directory; the export may run again.
//!
//! A value none of these is a store of a newer Troupe (or no store): refused, never
//! overwritten.

use std::sync::Arc;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, TxnOp, TxnOpResponse};

use super::bridge::timed;
use super::connect::connect_client;
use super::layout::{Layout, prefix_end};
use super::members::Members;
use crate::store::{EtcdUrl, Revision, StoreError};

const FORMAT: &str = "troupe-store 1";

/// What the marker says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Marker {
    /// The store's revisions continue after this one (0: they start at 1).
    pub(super) after: Revision,
    /// The first revision whose history the store has (0: all of it).
    pub(super) history_from: Revision,
    /// An import is under way, or died part way.
    pub(super) importing: bool,
    /// The store was moved into a data directory, or is being moved.
    pub(super) moved_out: bool,
}

impl Marker {
    /// The marker of an import under way, into a store whose revisions continue after `after`.
    pub(super) fn importing(after: Revision) -> Self {
        Self {
            after,
            importing: true,
            ..Self::default()
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let (after, from) = (self.after, self.history_from);
        let text = match (self.importing, self.moved_out) {
            (true, _) => format!("{FORMAT} importing after={after}"),
            (false, true) => format!("{FORMAT} moved-out after={after} history-from={from}"),
            (false, false) if after == 0 && from == 0 => FORMAT.to_string(),
            (false, false) => format!("{FORMAT} after={after} history-from={from}"),
        };
        text.into_bytes()
    }

    /// The marker `bytes` hold; `None` for a value this Troupe does not write.
    pub(super) fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut words = text.strip_prefix(FORMAT)?.split_whitespace();
        let mut marker = Marker::default();
        let number = |word: Option<&str>, name: &str| -> Option<Revision> {
            word?.strip_prefix(name)?.strip_prefix('=')?.parse().ok()
        };
        match words.next() {
            None => return Some(marker),
            Some("importing") => {
                marker.importing = true;
                marker.after = number(words.next(), "after")?;
            }
            Some("moved-out") => {
                marker.moved_out = true;
                marker.after = number(words.next(), "after")?;
                marker.history_from = number(words.next(), "history-from")?;
            }
            first => {
                marker.after = number(first, "after")?;
                marker.history_from = number(words.next(), "history-from")?;
            }
        }
        words.next().is_none().then_some(marker)
    }
}

/// How an open treats the marker.
#[derive(Debug, Clone, Copy)]
pub(super) enum Opening {
    /// A server's open: creates a store made here if there is none; refuses one being
    /// imported.
    Serve,
    /// An import's: the prefix must be empty, and the store is created importing, its
    /// revisions continuing after this one.
    Import { after: Revision },
    /// An export's (`troupe migrate --from-etcd`): the store must exist and not be being
    /// imported; one moved out already opens, so an export that stopped part way runs again.
    Export,
}

/// Connects to the cluster (calling only the members that take connections) and writes the
/// marker (creating it, and so the store, on the first open); returns the client, the layout
/// with its base and marker, the etcd revision of the marker's write, and the members.
pub(super) async fn mark(
    url: &EtcdUrl,
    opening: Opening,
) -> Result<(Client, Layout, i64, Arc<Members>), StoreError> {
    let client = connect_client(url).await?;
    let checked = Members::new(client.clone(), url, super::connect::connect_options(url)?);
    checked.check(std::time::Instant::now()).await;
    let (client, layout, revision) = write(url, opening, client).await?;
    Ok((client, layout, revision, checked))
}

/// Writes the marker through `client`, as [`mark`] says.
async fn write(
    url: &EtcdUrl,
    opening: Opening,
    client: Client,
) -> Result<(Client, Layout, i64), StoreError> {
    let members = url.members();
    let layout = Layout::new(&url.prefix);
    let key = layout.marker();
    let mut kv = client.kv_client();
    // Twice at most: a first open may race another replica's.
    for _ in 0..2 {
        let found = timed(&members, "opening the store", kv.get(key.clone(), None)).await?;
        let Some(stored) = found.kvs().first() else {
            let (marker, empty) = match opening {
                Opening::Serve => (Marker::default(), None),
                Opening::Export => {
                    return Err(StoreError::Engine(format!(
                        "etcd at {members}: there is no store under {}: nothing to move",
                        url.prefix
                    )));
                }
                // Nothing at all under the prefix: an import never mixes with other keys.
                Opening::Import { after } => (
                    Marker::importing(after),
                    Some(
                        Compare::version(layout.root().to_vec(), CompareOp::Equal, 0)
                            .with_range(prefix_end(layout.root())),
                    ),
                ),
            };
            let mut compares = vec![Compare::version(key.clone(), CompareOp::Equal, 0)];
            compares.extend(empty.clone());
            let create = etcd_client::Txn::new().when(compares).and_then([TxnOp::put(
                key.clone(),
                marker.encode(),
                None,
            )]);
            let response = timed(&members, "creating the store", kv.txn(create)).await?;
            if response.succeeded() {
                let revision = response.header().map_or(0, |h| h.revision());
                let base = revision - to_i64(marker.after);
                return Ok((client, layout.with_base(base, marker), revision));
            }
            if empty.is_some() {
                return Err(not_empty(url));
            }
            continue;
        };
        let found_bytes = stored.value().to_vec();
        let Some(marker) = Marker::parse(&found_bytes) else {
            return Err(StoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: format!(
                    "the store under {} is {:?}, not {FORMAT:?}: written by a newer Troupe, or \
                     not a Troupe store",
                    url.prefix,
                    String::from_utf8_lossy(&found_bytes)
                ),
            });
        };
        admits(url, opening, marker)?;
        let rewrite = etcd_client::Txn::new()
            .when([Compare::value(
                key.clone(),
                CompareOp::Equal,
                found_bytes.clone(),
            )])
            .and_then([TxnOp::put(
                key.clone(),
                found_bytes,
                Some(PutOptions::new().with_prev_key()),
            )]);
        let response = timed(&members, "opening the store", kv.txn(rewrite)).await?;
        let revision = response.header().map_or(0, |h| h.revision());
        if let Some(TxnOpResponse::Put(put)) = response.op_responses().first()
            && response.succeeded()
        {
            let created = put.prev_key().map_or(revision, |kv| kv.create_revision());
            let base = created - to_i64(marker.after);
            return Ok((client, layout.with_base(base, marker), revision));
        }
    }
    Err(StoreError::Engine(format!(
        "etcd at {members}: the store's marker under {} keeps changing while opening",
        url.prefix
    )))
}

/// Whether `opening` may open the store whose marker says `marker`: an import needs an empty
/// prefix, and a server neither a store being imported nor one moved out.
fn admits(url: &EtcdUrl, opening: Opening, marker: Marker) -> Result<(), StoreError> {
    let (members, prefix) = (url.members(), &url.prefix);
    match opening {
        Opening::Import { .. } => Err(not_empty(url)),
        Opening::Serve | Opening::Export if marker.importing => Err(StoreError::Engine(format!(
            "etcd at {members}: the store under {prefix} is being imported, or its import \
             stopped part way: wait for `troupe migrate` to finish, or delete what it wrote \
             (etcdctl del --prefix {prefix}/) and run it again"
        ))),
        Opening::Serve if marker.moved_out => {
            let serving = Marker {
                moved_out: false,
                ..marker
            };
            Err(StoreError::Engine(format!(
                "etcd at {members}: the store under {prefix} was moved into a data directory \
                 by `troupe migrate --from-etcd` (or is being moved): serve that directory \
                 instead. To serve this copy again, left as it was when it moved, put the \
                 marker back: etcdctl put {prefix}/store '{}'",
                String::from_utf8_lossy(&serving.encode())
            )))
        }
        Opening::Serve | Opening::Export => Ok(()),
    }
}

/// Marks the import into the store of `layout` done: its history starts at `history_from`.
pub(super) async fn finish_import(
    client: &Client,
    members: &str,
    layout: &Layout,
    history_from: Revision,
) -> Result<(), StoreError> {
    let marker = layout.marker_value();
    let done = Marker {
        importing: false,
        history_from,
        ..marker
    };
    let key = layout.marker();
    let finish = etcd_client::Txn::new()
        .when([Compare::value(
            key.clone(),
            CompareOp::Equal,
            marker.encode(),
        )])
        .and_then([TxnOp::put(key, done.encode(), None)]);
    let mut kv = client.kv_client();
    let response = timed(members, "finishing the import", kv.txn(finish)).await?;
    if !response.succeeded() {
        return Err(StoreError::Engine(format!(
            "etcd at {members}: the store's marker changed during the import"
        )));
    }
    Ok(())
}

/// Marks the store of `layout` moved out (`troupe migrate --from-etcd`), in one transaction
/// that finds no server announced under `servers`: one still running would go on writing
/// what the move leaves behind. Returns the servers found instead, by name.
pub(super) async fn move_out(
    client: &Client,
    members: &str,
    layout: &Layout,
    servers: &[u8],
) -> Result<Vec<String>, StoreError> {
    let marker = layout.marker_value();
    if marker.moved_out {
        return Ok(Vec::new());
    }
    let moved = Marker {
        moved_out: true,
        ..marker
    };
    let key = layout.marker();
    let mark = etcd_client::Txn::new()
        .when([
            Compare::value(key.clone(), CompareOp::Equal, marker.encode()),
            Compare::version(servers.to_vec(), CompareOp::Equal, 0).with_range(prefix_end(servers)),
        ])
        .and_then([TxnOp::put(key, moved.encode(), None)])
        .or_else([TxnOp::get(
            servers.to_vec(),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )]);
    let mut kv = client.kv_client();
    let response = timed(members, "marking the store moved out", kv.txn(mark)).await?;
    if response.succeeded() {
        return Ok(Vec::new());
    }
    let mut running = Vec::new();
    if let Some(TxnOpResponse::Get(found)) = response.op_responses().first() {
        for kv in found.kvs() {
            let name = kv.key().strip_prefix(servers).unwrap_or(kv.key());
            running.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    if running.is_empty() {
        return Err(StoreError::Engine(format!(
            "etcd at {members}: the store's marker changed while it was being moved out"
        )));
    }
    Ok(running)
}

fn not_empty(url: &EtcdUrl) -> StoreError {
    StoreError::Engine(format!(
        "etcd at {}: {}/ already holds keys: import only into a prefix with nothing under it \
         (name another prefix in the store URL, or delete what is there: etcdctl del --prefix \
         {}/)",
        url.members(),
        url.prefix,
        url.prefix
    ))
}

fn to_i64(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_read_back_what_they_wrote_and_nothing_else() {
        for marker in [
            Marker::default(),
            Marker::importing(41),
            Marker {
                after: 41,
                history_from: 97,
                ..Marker::default()
            },
            Marker {
                after: 41,
                history_from: 97,
                moved_out: true,
                ..Marker::default()
            },
        ] {
            assert_eq!(Marker::parse(&marker.encode()), Some(marker));
        }
        assert_eq!(Marker::default().encode(), b"troupe-store 1");
        for other in [
            &b"troupe-store 2"[..],
            b"troupe-store 1 after=4",
            b"troupe-store 1 importing",
            b"troupe-store 1 moved-out after=4",
            b"troupe-store 1 after=x history-from=2",
            b"troupe-store 1 after=1 history-from=2 more",
            b"",
        ] {
            assert_eq!(Marker::parse(other), None, "{other:?}");
        }
    }
}
