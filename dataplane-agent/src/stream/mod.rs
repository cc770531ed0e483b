//! The agent's side of `AgentService.Session`, and the loop that keeps it open.
//!
//! [`run`] loads the state, registers if needed and starts the [`Worker`] that owns the
//! state from then on (it applies, records, prunes and corrects drift, connected or not).
//! Then it keeps one stream open at a time ([`session`]), reconnecting with full-jitter
//! exponential backoff. A stream only carries messages between the control plane and the
//! worker: it never waits for an apply, so heartbeats go out while one runs, and nothing is
//! pruned because a stream ended.
//!
//! - [`session`]: one stream, from `Hello` until it ends.
//! - [`chunks`]: joins the chunks of an upsert before it is handed to the worker.
//!
//! A program that carries the stream itself (the simulation test of the agent protocol)
//! starts the worker with [`spawn_worker`] and runs each stream with [`Session::open`] and
//! [`Session::serve`], the same code [`run`] runs over gRPC.

mod chunks;
mod session;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use tokio::sync::watch;
use troupe_common::backoff::doubling;

use crate::builds::Builds;
use crate::identity;
use crate::state::{Held, State};
use crate::worker::Worker;
use crate::{Config, stopped};

pub use self::session::Session;
pub use crate::worker::Handle as WorkerHandle;

/// Starts the task that owns the agent's state: over `state` and what it holds (`held`, as
/// [`State::load`] read it), with `config`'s applier, policy, timings and concurrency. It
/// corrects drift while no stream is open, and stops when `shutdown` turns true, abandoning
/// applies in flight as a crash would. With [`Config::builds`], it starts the build plane
/// too ([`Builds`]), which stops, killing the steps it runs, on the same `shutdown`.
pub fn spawn_worker(
    config: &Config,
    state: State,
    held: BTreeMap<String, Held>,
    shutdown: watch::Receiver<bool>,
) -> WorkerHandle {
    let builds = config
        .builds
        .clone()
        .map(|builds| Builds::spawn(builds, shutdown.clone()));
    let mut worker = Worker::spawn(
        config.applier.clone(),
        config.policy.clone(),
        state,
        held,
        crate::worker::Timing {
            resync_every: config.resync_every,
            retry_base: config.retry_base,
            retry_max: config.retry_max,
        },
        config.apply_concurrency,
        shutdown,
    );
    worker.builds = builds;
    worker
}

/// Runs the agent until `shutdown` turns true: registers if needed, then keeps a stream open,
/// each time to the next of its endpoints, reconnecting with full-jitter exponential backoff
/// once every endpoint failed, and corrects drift meanwhile.
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let state = State::open(&config.state_dir)
        .with_context(|| format!("opening the state in {}", config.state_dir.display()))?;
    let held = state.load().context("reading the agent's state")?;
    tracing::info!(releases = held.len(), state = %config.state_dir.display(), "agent state loaded");
    let endpoints = config.endpoints();
    anyhow::ensure!(!endpoints.is_empty(), "--control-plane names no endpoint");
    let mut next = first_endpoint(&config, endpoints.len());
    let registration_order = rotated(&endpoints, next);
    let identity = tokio::select! {
        identity = identity::load_or_register(
            &config.state_dir,
            &registration_order,
            &config.data_plane,
            config.token.as_deref(),
            config.ca_cert.as_deref(),
        ) => identity?,
        _ = stopped(&mut shutdown) => return Ok(()),
    };
    let worker = spawn_worker(&config, state, held, shutdown.clone());

    let mut attempt: u32 = 0;
    let mut failed_in_round = 0;
    loop {
        let started = Instant::now();
        let url = endpoints[next % endpoints.len()];
        // Whatever happens to this stream, the next one tries the next replica.
        next += 1;
        let outcome = tokio::select! {
            outcome = session::session(&config, url, &identity, &worker) => outcome,
            _ = stopped(&mut shutdown) => return Ok(()),
        };
        let reason = match outcome {
            Ok(()) => {
                tracing::info!("stream ended; reconnecting");
                "the control plane ended the stream".to_string()
            }
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(error = %reason, "stream failed; reconnecting");
                reason
            }
        };
        if let Some(on_event) = &config.on_event {
            on_event(crate::Event::Disconnected { reason });
        }
        // A stream that lived a while resets the backoff: it was a disconnect, not a failure
        // to connect.
        if started.elapsed() > Duration::from_secs(30) {
            attempt = 0;
            failed_in_round = 0;
        }
        // The other endpoints are tried at once (with the first bound's jitter, so a fleet
        // leaving a dead replica does not arrive at once); a whole round that failed backs off.
        failed_in_round += 1;
        let delay = if failed_in_round < endpoints.len() {
            backoff(&config, 0)
        } else {
            failed_in_round = 0;
            attempt = attempt.saturating_add(1);
            backoff(&config, attempt - 1)
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut shutdown) => return Ok(()),
        }
    }
}

/// Where a fleet's agents start: spread over the endpoints by data plane name.
fn first_endpoint(config: &Config, count: usize) -> usize {
    let name = config.data_plane.to_string();
    let hash = troupe_common::fnv::fnv1a(name.as_bytes());
    (hash % count as u64) as usize
}

/// The endpoints starting at `first`, wrapping around.
fn rotated<'a>(endpoints: &[&'a str], first: usize) -> Vec<&'a str> {
    let n = endpoints.len();
    (0..n).map(|i| endpoints[(first + i) % n]).collect()
}

/// Full jitter: a uniformly random delay up to the exponential bound.
fn backoff(config: &Config, attempt: u32) -> Duration {
    let bound = doubling(
        config.backoff_base,
        config.backoff_max,
        attempt.saturating_add(1),
    );
    let millis = bound.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(0..=millis))
}
