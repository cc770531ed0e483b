//! What the agent sends during a session: acks (which move what the agent holds, retire
//! what was in flight, and become Release status), health reports and heartbeats.

use tokio::time::Instant;
use tonic::Status;
use troupe_common::pb::v1alpha1::{AgentMessage, agent_message};
use troupe_common::timestamp::now_seconds;

use super::{InFlight, Session, release_key};
use crate::agents::{Item, Work};

impl Session {
    /// Handles one message from the agent.
    pub(super) fn receive(&mut self, message: AgentMessage, work: &Work) -> Result<(), Status> {
        match message.message {
            Some(agent_message::Message::Ack(ack)) => {
                let flight = match self.in_flight.get(&ack.release) {
                    Some(flight) if flight.generation == ack.generation => {
                        self.in_flight.remove(&ack.release).expect("just found")
                    }
                    Some(_) => return Ok(()),
                    // A removal that failed and that the agent retried on its own until it
                    // went through.
                    None if ack.ok
                        && self.failed.get(&ack.release) == Some(&ack.generation)
                        && self
                            .hub
                            .desired(&self.plane, &ack.release)
                            .is_none_or(|d| d.terminating) =>
                    {
                        InFlight {
                            generation: ack.generation,
                            content_hash: String::new(),
                            remove: true,
                        }
                    }
                    None => return Ok(()),
                };
                let key = release_key(&ack.release);
                if ack.ok {
                    self.failed.remove(&ack.release);
                    self.retries.forget(&ack.release);
                    if flight.remove {
                        self.held.remove(&ack.release);
                        let resources = self.hub.resources.clone();
                        tokio::spawn(async move {
                            if let Err(e) = resources.purge_release(&key, flight.generation).await {
                                tracing::warn!(release = %key, error = %e, "could not remove a pruned release");
                            }
                        });
                    } else {
                        self.held.insert(
                            ack.release.clone(),
                            (flight.generation, flight.content_hash),
                        );
                        self.hub.status.applied(key, flight.generation);
                    }
                } else {
                    self.failed.insert(ack.release.clone(), flight.generation);
                    if !flight.remove {
                        self.retries
                            .failed(&ack.release, flight.generation, Instant::now());
                    }
                    // A failed apply or prune may have gone partway: what the agent holds of
                    // the release is no longer known whole, so whatever is wanted next, even
                    // the content it held, is sent again.
                    if let Some((_, hash)) = self.held.get_mut(&ack.release) {
                        hash.clear();
                    }
                    self.hub.status.failed(key, flight.generation, ack.error);
                }
                self.report_due = true;
                work.push(Item::Release(ack.release));
            }
            // An agent reports only on releases of its own data plane.
            Some(agent_message::Message::Status(report))
                if self.hub.desired(&self.plane, &report.release).is_some() =>
            {
                self.hub.status.health(
                    release_key(&report.release),
                    report.generation,
                    report.resources,
                );
            }
            // The heartbeat time is written at most every 30 s.
            Some(agent_message::Message::Heartbeat(_))
                if self
                    .report
                    .last_heartbeat
                    .is_none_or(|t| now_seconds().seconds - t.seconds >= 30) =>
            {
                self.report.last_heartbeat = Some(now_seconds());
                self.report_due = true;
            }
            Some(agent_message::Message::Hello(_)) => {
                return Err(Status::invalid_argument("Hello is sent once, first"));
            }
            Some(_) | None => {}
        }
        Ok(())
    }
}
