//! `troupe migrate`: moves a stopped server's data directory into an empty etcd store
//! ([`crate::migrate`]), then says what it moved and how to start the servers on it.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::builds::BuildConfig;
use crate::store::StoreLocation;

/// Move a stopped server's store and state from its data directory into an empty etcd store.
#[derive(Debug, clap::Args)]
pub struct MigrateCmd {
    /// The data directory of the server to move (stopped: its store is locked while it runs).
    #[arg(long, env = "TROUPE_DATA_DIR")]
    data_dir: PathBuf,
    /// The etcd store to move it into, as `troupe server --store` takes it
    /// (etcd://HOST:PORT[,HOST:PORT…][/PREFIX][?…]); nothing may be under its prefix yet.
    #[arg(long, env = "TROUPE_STORE", value_name = "URL")]
    store: StoreLocation,
    /// Most bytes of build log kept per run, as the servers on the store will keep.
    #[arg(long, default_value_t = BuildConfig::default().max_log_bytes)]
    build_max_log_bytes: u64,
}

impl MigrateCmd {
    /// Moves the data directory and prints what moved.
    pub(super) fn run(self) -> anyhow::Result<ExitCode> {
        let StoreLocation::Etcd(url) = &self.store else {
            anyhow::bail!("--store: name an etcd store (etcd://HOST:PORT[/PREFIX]) to move into");
        };
        self.move_to(url)
    }

    #[cfg(feature = "etcd")]
    fn move_to(&self, url: &crate::store::EtcdUrl) -> anyhow::Result<ExitCode> {
        let moved = crate::migrate::migrate(&self.data_dir, url, self.build_max_log_bytes)?;
        outln!(
            "moved {} objects from {} to {url}: revisions go on after {}; a watch resumes from {} or later",
            moved.objects,
            self.data_dir.display(),
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
        outln!(
            "start the servers with --store {url} (the same --data-dir keeps the audit log \
             and copies of ca.crt and admin.token)"
        );
        Ok(ExitCode::SUCCESS)
    }

    #[cfg(not(feature = "etcd"))]
    fn move_to(&self, url: &crate::store::EtcdUrl) -> anyhow::Result<ExitCode> {
        anyhow::bail!(
            "--store {url}: this troupe was built without etcd support; build it with \
             `cargo build --features troupe-control-plane/etcd`"
        )
    }
}
