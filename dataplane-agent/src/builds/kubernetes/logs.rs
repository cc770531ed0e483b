//! Following one step's container log (`pods/NAME/log?container=STEP&follow=true`), cut into
//! bounded lines as the process executor cuts its pipes.
//!
//! A stream can end before its container does (the API server restarts, a connection drops):
//! the reader reports how many whole lines it read, and the run reads again, skipping those.
//! The kubelet keeps a container's whole log, so nothing is repeated and nothing is lost. A
//! line without its newline is held back until the run knows the container has ended.
//! Kubernetes merges a container's stdout and stderr into one log: every line is `stdout`.

use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::builds::lines::Lines;

/// How much is read at once.
const READ_BYTES: usize = 8 * 1024;

/// What a reader tells the run.
#[derive(Debug)]
pub(super) enum LogMsg {
    /// A whole line of step `step`.
    Line { step: usize, line: String },
    /// The stream ended.
    End {
        step: usize,
        /// Whole lines of the container's log read so far, across reads.
        complete: u64,
        /// What followed the last newline, if anything.
        partial: Option<String>,
        /// Why it ended, if not at the end of the log.
        error: Option<String>,
    },
}

/// Reads the log of container `container` of `pod` from its line `skip` on, in a task.
pub(super) fn follow(
    api: Api<Pod>,
    pod: String,
    container: String,
    step: usize,
    skip: u64,
    max_line_bytes: usize,
    out: mpsc::Sender<LogMsg>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut complete = 0u64;
        let mut lines = Lines::new(max_line_bytes);
        let params = LogParams {
            container: Some(container),
            follow: true,
            ..LogParams::default()
        };
        let error = match api.log_stream(&pod, &params).await {
            Err(error) => Some(error.to_string()),
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                let mut buffer = vec![0u8; READ_BYTES];
                loop {
                    let read = match stream.read(&mut buffer).await {
                        Ok(0) => break None,
                        Ok(read) => read,
                        Err(error) => break Some(error.to_string()),
                    };
                    let mut whole = Vec::new();
                    lines.push(&buffer[..read], &mut whole);
                    for line in whole {
                        complete += 1;
                        if complete > skip && out.send(LogMsg::Line { step, line }).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let partial = lines.finish();
        let end = LogMsg::End {
            step,
            complete: complete.max(skip),
            partial,
            error,
        };
        let _ = out.send(end).await;
    })
}
