//! `troupe migrate`: moves a stopped server's data directory into an empty etcd store, or
//! (`--from-etcd`) an etcd store whose servers are stopped into a data directory
//! ([`crate::migrate`]); then says what it moved and how to start the servers on it.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::builds::BuildConfig;
use crate::store::StoreLocation;

/// Move a stopped server's store and state from its data directory into an empty etcd store,
/// or with --from-etcd the other way.
#[derive(Debug, clap::Args)]
pub struct MigrateCmd {
    /// The data directory of the server to move (stopped: its store is locked while it runs);
    /// with --from-etcd, the one to move into (it may hold anything but a store).
    #[arg(long, env = "TROUPE_DATA_DIR")]
    data_dir: PathBuf,
    /// The etcd store to move it into, as `troupe server --store` takes it
    /// (etcd://HOST:PORT[,HOST:PORT…][/PREFIX][?…]); nothing may be under its prefix yet.
    /// With --from-etcd, the store to move out of.
    #[arg(long, env = "TROUPE_STORE", value_name = "URL")]
    store: StoreLocation,
    /// Move the other way: the etcd store (every server on it stopped) into the data
    /// directory, for one server on sled; servers refuse the etcd store afterwards.
    #[arg(long)]
    from_etcd: bool,
    /// Most bytes of build log kept per run, as the servers on the store will keep.
    #[arg(long, default_value_t = BuildConfig::default().max_log_bytes)]
    build_max_log_bytes: u64,
}

impl MigrateCmd {
    /// Moves the data directory and prints what moved.
    pub(super) fn run(self) -> anyhow::Result<ExitCode> {
        let StoreLocation::Etcd(url) = &self.store else {
            anyhow::bail!(
                "--store: name an etcd store (etcd://HOST:PORT[/PREFIX]) to move {}",
                if self.from_etcd { "out of" } else { "into" }
            );
        };
        if self.from_etcd {
            self.move_from(url)
        } else {
            self.move_to(url)
        }
    }

    #[cfg(feature = "etcd")]
    fn move_from(&self, url: &crate::store::EtcdUrl) -> anyhow::Result<ExitCode> {
        let moved = crate::migrate::migrate_out(url, &self.data_dir, self.build_max_log_bytes)?;
        say_moved(&moved, url, &self.data_dir.display());
        outln!(
            "start the server with --data-dir {} and no --store; servers started on {url} \
             refuse it now",
            self.data_dir.display()
        );
        Ok(ExitCode::SUCCESS)
    }

    #[cfg(feature = "etcd")]
    fn move_to(&self, url: &crate::store::EtcdUrl) -> anyhow::Result<ExitCode> {
        let moved = crate::migrate::migrate(&self.data_dir, url, self.build_max_log_bytes)?;
        say_moved(&moved, &self.data_dir.display(), url);
        outln!(
            "start the servers with --store {url} (the same --data-dir keeps the audit log \
             and copies of ca.crt and admin.token)"
        );
        Ok(ExitCode::SUCCESS)
    }

    #[cfg(not(feature = "etcd"))]
    fn move_from(&self, url: &crate::store::EtcdUrl) -> anyhow::Result<ExitCode> {
        self.move_to(url)
    }

    #[cfg(not(feature = "etcd"))]
    fn move_to(&self, url: &crate::store::EtcdUrl) -> anyhow::Result<ExitCode> {
        anyhow::bail!(
            "--store {url}: this troupe was built without etcd support; build it with \
             `cargo build --features troupe-control-plane/etcd`"
        )
    }
}

/// Says what `moved` holds, moved from `from` to `to`.
#[cfg(feature = "etcd")]
fn say_moved(
    moved: &crate::migrate::Moved,
    from: &dyn std::fmt::Display,
    to: &dyn std::fmt::Display,
) {
    outln!(
        "moved {} objects from {from} to {to}: revisions go on after {}; a watch resumes from {} or later",
        moved.objects,
        moved.after,
        moved.history_from
    );
    outln!(
        "moved the agent CA{}, {} join tokens, {} API tokens (the admin token with them), \
         {} webhook secrets, the build logs of {} runs",
        if moved.ca { "" } else { " (none yet)" },
        moved.join_tokens,
        moved.api_tokens,
        moved.webhook_secrets,
        moved.build_logs
    );
}
