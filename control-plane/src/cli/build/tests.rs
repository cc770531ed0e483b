//! The build verbs as a user types them, what they print, and how `logs -f` follows a run
//! through broken streams and lost attempts (the server scripted: each stream, each look at
//! the run).

use std::collections::VecDeque;

use clap::Parser;
use tonic::{Code, Status};

use super::*;
use crate::cli::{Args, Command};

fn mk_args(line: &[&str]) -> Result<Command, String> {
    let argv = std::iter::once("troupe").chain(line.iter().copied());
    Args::try_parse_from(argv)
        .map(|a| a.command)
        .map_err(|e| e.to_string())
}

#[test]
fn build_takes_commit_sets_source_and_wait() {
    let Ok(Command::Build(cmd)) = mk_args(&[
        "build",
        "api",
        "-n",
        "shop",
        "--commit",
        "abc123",
        "--set",
        "resources.cpu=500m",
        "--set",
        "args=a=b",
        "--set",
        "resources.cpu=1",
        "--set",
        "empty=",
        "--repository",
        "https://git.example/shop/api",
        "--ref",
        "refs/heads/main",
        "--wait",
    ]) else {
        panic!("not parsed as build");
    };
    assert!(cmd.wait);
    let request = cmd.request();
    assert_eq!(request.namespace, "shop");
    assert_eq!(request.component, "api");
    assert_eq!(request.commit, "abc123");
    assert_eq!(request.repository, "https://git.example/shop/api");
    assert_eq!(request.r#ref, "refs/heads/main");
    let mut set: Vec<_> = request.set.into_iter().collect();
    set.sort();
    assert_eq!(
        set,
        [
            ("args".to_string(), "a=b".to_string()),
            ("empty".to_string(), String::new()),
            ("resources.cpu".to_string(), "1".to_string()),
        ],
        "the value is everything after the first `=`; the last of a key wins"
    );
    let Ok(Command::Build(cmd)) = mk_args(&["build", "api", "-n", "shop"]) else {
        panic!("not parsed as build");
    };
    assert!(!cmd.wait);
    assert!(cmd.request().set.is_empty());
}

#[test]
fn a_set_without_a_key_is_refused_before_anything_is_sent() {
    for bad in ["nokey", "=value"] {
        let err = mk_args(&["build", "api", "-n", "shop", "--set", bad])
            .err()
            .unwrap();
        assert!(err.contains("is not KEY=VALUE"), "{err}");
    }
}

#[test]
fn logs_cancel_and_retry_name_a_run() {
    let Ok(Command::Logs(cmd)) = mk_args(&[
        "logs",
        "api-7",
        "-n",
        "shop",
        "--step",
        "test",
        "--attempt",
        "2",
        "-f",
    ]) else {
        panic!("not parsed as logs");
    };
    assert_eq!(
        (cmd.run.as_str(), cmd.namespace.as_str(), cmd.step.as_str()),
        ("api-7", "shop", "test")
    );
    assert_eq!((cmd.attempt, cmd.follow), (2, true));
    let Ok(Command::Logs(cmd)) = mk_args(&["logs", "api-7", "-n", "shop"]) else {
        panic!("not parsed as logs");
    };
    assert_eq!((cmd.attempt, cmd.follow, cmd.step.as_str()), (0, false, ""));
    let Ok(Command::Cancel(cmd)) = mk_args(&["cancel", "api-7", "-n", "shop"]) else {
        panic!("not parsed as cancel");
    };
    assert_eq!(
        (cmd.run.as_str(), cmd.namespace.as_str()),
        ("api-7", "shop")
    );
    let Ok(Command::Retry(cmd)) = mk_args(&["retry", "api-7", "--namespace", "shop"]) else {
        panic!("not parsed as retry");
    };
    assert_eq!(cmd.run, "api-7");
    assert!(
        mk_args(&["retry", "-n", "shop"]).is_err(),
        "the run is required"
    );
}

fn mk_run(phase: &str, attempt: i32, message: &str) -> pb::WorkflowRun {
    pb::WorkflowRun {
        metadata: Some(pb::ObjectMeta {
            name: "api-7".into(),
            namespace: "shop".into(),
            ..Default::default()
        }),
        status: Some(pb::WorkflowRunStatus {
            phase: phase.into(),
            attempt,
            message: message.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_run_is_one_line_with_its_phase_attempt_and_message() {
    assert_eq!(describe(&mk_run("", 0, "")), "workflowrun/api-7: Pending");
    assert_eq!(
        describe(&mk_run("Pending", 0, "no build agent matches pool=gpu")),
        "workflowrun/api-7: Pending: no build agent matches pool=gpu"
    );
    assert_eq!(
        describe(&mk_run("Running", 1, "")),
        "workflowrun/api-7: Running"
    );
    assert_eq!(
        describe(&mk_run("Failed", 2, "step \"test\" exited with code 2")),
        "workflowrun/api-7: Failed (attempt 2): step \"test\" exited with code 2"
    );
    assert_eq!(phase_of(&mk_run("TimedOut", 1, "")), RunPhase::TimedOut);
    assert_eq!(phase_of(&mk_run("", 0, "")), RunPhase::Pending);
}

fn mk_line(seq: u64, step: &str, text: &str, stream: &str) -> pb::LogLine {
    pb::LogLine {
        seq,
        step: step.into(),
        stream: stream.into(),
        text: text.into(),
        time: None,
    }
}

#[test]
fn a_log_line_is_its_step_and_text_whatever_its_stream() {
    assert_eq!(
        log_line(&mk_line(1, "build", "compiling app v1.0", "stdout")),
        "[build] compiling app v1.0"
    );
    assert_eq!(
        log_line(&mk_line(2, "test", "warning: slow test", "stderr")),
        "[test] warning: slow test"
    );
}

/// One scripted stream: its batches then how it ends, or the error that refused it.
type Opening = Result<Vec<Result<pb::LogsResponse, Status>>, Status>;

/// The server as a script: what each opening of the stream gives, what each look at the run
/// says; and what the CLI asked and how long it paused.
#[derive(Default)]
struct Script {
    openings: VecDeque<Opening>,
    states: VecDeque<Result<(RunPhase, u32), Status>>,
    asked: Vec<pb::LogsRequest>,
    pauses: Vec<Duration>,
}

impl RunSource for Script {
    async fn open(&mut self, request: pb::LogsRequest) -> Result<LogStream, Status> {
        self.asked.push(request);
        let opening = self.openings.pop_front().expect("an unscripted opening");
        Ok(futures::stream::iter(opening?).boxed())
    }

    async fn state(&mut self) -> Result<(RunPhase, u32), Status> {
        self.states
            .pop_front()
            .expect("an unscripted look at the run")
    }

    async fn pause(&mut self, delay: Duration) {
        self.pauses.push(delay);
    }
}

fn mk_batch(attempt: u32, lines: &[(u64, &str)]) -> Result<pb::LogsResponse, Status> {
    Ok(pb::LogsResponse {
        attempt,
        lines: lines
            .iter()
            .map(|(seq, text)| mk_line(*seq, "build", text, "stdout"))
            .collect(),
    })
}

async fn mk_follow(
    script: &mut Script,
    attempt: u32,
    following: bool,
) -> (anyhow::Result<Option<RunPhase>>, Vec<String>) {
    let mut printed = Vec::new();
    let request = logs_request("shop", "api-7", "", attempt);
    let result = follow(script, request, following, &mut |l| printed.push(l)).await;
    (result, printed)
}

#[tokio::test]
async fn without_follow_the_stored_lines_print_once_and_nothing_is_reopened() {
    let mut script = Script::default();
    script.openings.push_back(Ok(vec![
        mk_batch(1, &[(1, "one"), (2, "two")]),
        mk_batch(1, &[(3, "three")]),
    ]));
    let (result, printed) = mk_follow(&mut script, 0, false).await;
    assert_eq!(result.unwrap(), None);
    assert_eq!(printed, ["[build] one", "[build] two", "[build] three"]);
    assert!(!script.asked[0].follow);

    let mut script = Script::default();
    script
        .openings
        .push_back(Ok(vec![Err(Status::unavailable("connection reset"))]));
    let (result, _) = mk_follow(&mut script, 0, false).await;
    assert!(result.unwrap_err().to_string().contains("connection reset"));
    assert_eq!(script.asked.len(), 1);
}

#[tokio::test]
async fn a_broken_stream_resumes_after_the_last_line_printed() {
    let mut script = Script::default();
    script.openings.push_back(Ok(vec![
        mk_batch(1, &[(1, "one"), (2, "two")]),
        Err(Status::unavailable("the server went away")),
    ]));
    script
        .openings
        .push_back(Err(Status::unavailable("connection refused")));
    script.openings.push_back(Ok(vec![
        // A server may resend what it is unsure the client saw.
        mk_batch(1, &[(2, "two"), (3, "three")]),
    ]));
    script.states.push_back(Ok((RunPhase::Succeeded, 1)));
    let (result, printed) = mk_follow(&mut script, 0, true).await;
    assert_eq!(result.unwrap(), Some(RunPhase::Succeeded));
    assert_eq!(
        printed,
        ["[build] one", "[build] two", "[build] three"],
        "no line twice, none lost"
    );
    let resumed: Vec<(u32, u64, bool)> = script
        .asked
        .iter()
        .map(|r| (r.attempt, r.after_seq, r.follow))
        .collect();
    assert_eq!(resumed, [(0, 0, true), (1, 2, true), (1, 2, true)]);
    assert_eq!(
        script.pauses,
        [Duration::from_millis(200), Duration::from_millis(400)],
        "reopenings back off"
    );
}

#[tokio::test]
async fn a_lost_attempt_is_followed_by_the_next_from_its_first_line() {
    let mut script = Script::default();
    script
        .openings
        .push_back(Ok(vec![mk_batch(1, &[(1, "a1"), (2, "a2")])]));
    script.states.push_back(Ok((RunPhase::Running, 2)));
    script
        .openings
        .push_back(Ok(vec![mk_batch(2, &[(1, "b1")])]));
    script.states.push_back(Ok((RunPhase::Failed, 2)));
    let (result, printed) = mk_follow(&mut script, 0, true).await;
    assert_eq!(result.unwrap(), Some(RunPhase::Failed));
    assert_eq!(printed, ["[build] a1", "[build] a2", "[build] b1"]);
    assert_eq!((script.asked[1].attempt, script.asked[1].after_seq), (2, 0));

    // The server may move on to the new attempt within one stream.
    let mut script = Script::default();
    script.openings.push_back(Ok(vec![
        mk_batch(1, &[(1, "a1")]),
        mk_batch(2, &[(1, "b1"), (2, "b2")]),
    ]));
    script.states.push_back(Ok((RunPhase::Succeeded, 2)));
    let (result, printed) = mk_follow(&mut script, 0, true).await;
    assert_eq!(result.unwrap(), Some(RunPhase::Succeeded));
    assert_eq!(printed, ["[build] a1", "[build] b1", "[build] b2"]);
}

#[tokio::test]
async fn an_attempt_asked_for_is_read_to_its_end_only() {
    let mut script = Script::default();
    script
        .openings
        .push_back(Ok(vec![mk_batch(1, &[(1, "a1")])]));
    script.states.push_back(Ok((RunPhase::Running, 2)));
    let (result, printed) = mk_follow(&mut script, 1, true).await;
    assert_eq!(result.unwrap(), Some(RunPhase::Running));
    assert_eq!(printed, ["[build] a1"]);
    assert_eq!(script.asked.len(), 1);
    assert_eq!(script.asked[0].attempt, 1);
}

#[tokio::test]
async fn a_stream_that_ends_while_the_run_runs_is_reopened_without_giving_up() {
    let mut script = Script::default();
    for _ in 0..(MAX_FAILURES + 5) {
        script.openings.push_back(Ok(vec![]));
        script.states.push_back(Ok((RunPhase::Pending, 0)));
    }
    script
        .openings
        .push_back(Ok(vec![mk_batch(1, &[(1, "at last")])]));
    script.states.push_back(Ok((RunPhase::Succeeded, 1)));
    let (result, printed) = mk_follow(&mut script, 0, true).await;
    assert_eq!(result.unwrap(), Some(RunPhase::Succeeded));
    assert_eq!(printed, ["[build] at last"]);
    assert!(script.pauses.iter().all(|p| *p <= Duration::from_secs(5)));
}

#[tokio::test]
async fn following_gives_up_on_a_server_that_stays_away_and_at_once_on_a_refusal() {
    let mut script = Script::default();
    for _ in 0..=MAX_FAILURES {
        script
            .openings
            .push_back(Err(Status::unavailable("connection refused")));
    }
    let (result, _) = mk_follow(&mut script, 0, true).await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("lost the log stream 30 times in a row"),
        "{err}"
    );
    assert!(err.contains("connection refused"), "{err}");
    assert_eq!(script.asked.len() as u32, MAX_FAILURES + 1);

    let mut script = Script::default();
    script.openings.push_back(Err(Status::new(
        Code::NotFound,
        "WorkflowRun shop/api-7 not found",
    )));
    let (result, _) = mk_follow(&mut script, 0, true).await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("not found"), "{err}");
    assert_eq!(script.asked.len(), 1, "a refusal is not retried");
}
