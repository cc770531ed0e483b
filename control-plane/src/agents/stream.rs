//! The control plane's half of an agent stream: what the session queues for the agent, as
//! tonic reads it.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tonic::Status;
use troupe_common::pb::v1alpha1::ControlMessage;

pub(super) use troupe_common::agent::Outgoing;

/// The control plane's half of a stream.
pub struct ControlStream {
    rx: mpsc::Receiver<Outgoing>,
}

impl ControlStream {
    pub(super) fn new(rx: mpsc::Receiver<Outgoing>) -> Self {
        Self { rx }
    }
}

impl Stream for ControlStream {
    type Item = Result<ControlMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|item| item.map(|boxed| *boxed))
    }
}
