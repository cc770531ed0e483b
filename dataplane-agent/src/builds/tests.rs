//! The `process` executor with real processes: `/bin/sh` scripts the tests write, pids they
//! report, files they leave. No fixed sleeps: every wait polls or waits on an event, with a
//! bound that only a broken executor reaches.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::{Pid, test_kill_process};
use tempfile::TempDir;
use tokio::time::Instant;

use super::lines::cut_marker;
use super::*;

/// Longer than anything a working executor takes here.
pub(super) const PATIENCE: Duration = Duration::from_secs(15);

/// A scratch directory for scripts, the files they write, and the builds' root.
struct Bench {
    dir: TempDir,
}

impl Bench {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Where attempts get their work directories.
    fn root(&self) -> PathBuf {
        self.dir.path().join("builds")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A step running the shell script `body`, with `$OUT` naming the bench directory.
    fn step(&self, name: &str, body: &str) -> StepSpec {
        let script = self.path(&format!("{name}.sh"));
        fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        StepSpec::new(name, ["/bin/sh".to_string(), script.display().to_string()])
            .with_env("OUT", self.dir.path().display().to_string())
    }

    /// The pid a script wrote to `name`, once it is there.
    async fn pid(&self, name: &str) -> i32 {
        let path = self.path(name);
        poll(|| {
            fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.strip_suffix('\n')?.parse().ok())
        })
        .await
        .unwrap_or_else(|| panic!("the script wrote no pid to {name}"))
    }
}

fn mk_executor(timeout_grace: Duration) -> ProcessExecutor {
    ProcessExecutor::new(ProcessConfig {
        timeout_grace,
        ..ProcessConfig::default()
    })
}

/// `f()` once it is `Some`, within [`PATIENCE`].
pub(super) async fn poll<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `pid` is a live process. A killed process not yet reaped by its parent is a
/// zombie, and dead: orphans go to PID 1, which here never reaps them.
fn alive(pid: i32) -> bool {
    let Some(raw) = Pid::from_raw(pid) else {
        return false;
    };
    if test_kill_process(raw).is_err() {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub(super) async fn gone(pid: i32) -> bool {
    poll(|| (!alive(pid)).then_some(())).await.is_some()
}

async fn next(handle: &mut RunHandle) -> RunEvent {
    tokio::time::timeout(PATIENCE, handle.next())
        .await
        .expect("an event in time")
        .expect("the run ends with Finished")
}

/// Every event up to and including `Finished`; nothing comes after it.
async fn rest(handle: &mut RunHandle) -> Vec<RunEvent> {
    let mut events = Vec::new();
    loop {
        let event = next(handle).await;
        let done = matches!(event, RunEvent::Finished { .. });
        events.push(event);
        if done {
            assert!(handle.next().await.is_none(), "nothing after Finished");
            return events;
        }
    }
}

/// Events up to the log line `line`.
async fn until_line(handle: &mut RunHandle, line: &str) -> Vec<RunEvent> {
    let mut events = Vec::new();
    loop {
        let event = next(handle).await;
        let found = matches!(&event, RunEvent::Log { line: l, .. } if l == line);
        assert!(
            !matches!(event, RunEvent::Finished { .. }),
            "ended early: {event:?}"
        );
        events.push(event);
        if found {
            return events;
        }
    }
}

fn finished(events: &[RunEvent]) -> (Phase, BTreeMap<String, String>, String) {
    match events.last() {
        Some(RunEvent::Finished {
            phase,
            outputs,
            message,
        }) => (*phase, outputs.clone(), message.clone()),
        other => panic!("the last event is not Finished: {other:?}"),
    }
}

/// (step, stream, line) of every log line, checking that seq runs 1, 2, 3… with no gap.
fn logs(events: &[RunEvent]) -> Vec<(String, LogStream, String)> {
    let mut expected = 1;
    let mut lines = Vec::new();
    for event in events {
        if let RunEvent::Log {
            seq,
            step,
            stream,
            line,
            ..
        } = event
        {
            assert_eq!(*seq, expected, "log sequence in {events:#?}");
            expected += 1;
            lines.push((step.clone(), *stream, line.clone()));
        }
    }
    lines
}

fn lines_of(logs: &[(String, LogStream, String)], step: &str, stream: LogStream) -> Vec<String> {
    logs.iter()
        .filter(|(s, st, _)| s == step && *st == stream)
        .map(|(_, _, line)| line.clone())
        .collect()
}

/// The `StepFinished` of `step`.
fn step_end(events: &[RunEvent], name: &str) -> (Phase, Option<i32>, String) {
    events
        .iter()
        .find_map(|event| match event {
            RunEvent::StepFinished {
                step,
                phase,
                exit_code,
                message,
                ..
            } if step == name => Some((*phase, *exit_code, message.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no StepFinished for {name}: {events:#?}"))
}

fn started(events: &[RunEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|event| match event {
            RunEvent::StepStarted { step, .. } => Some(step.as_str()),
            _ => None,
        })
        .collect()
}

/// The executor's own lines (`[troupe] stopped reading stdout: …`).
fn notes(events: &[RunEvent]) -> Vec<String> {
    logs(events)
        .into_iter()
        .map(|(_, _, line)| line)
        .filter(|line| line.starts_with("[troupe]"))
        .collect()
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

#[tokio::test]
async fn two_steps_succeed_with_their_logs_in_order_and_their_outputs() {
    let bench = Bench::new();
    let compile = bench
        .step(
            "compile",
            r#"echo "home=$HOME"
echo "files=$(ls -A | wc -l)"
echo "warning: deprecated flag" >&2
echo "greeting=$GREETING"
echo "env=$(env | cut -d= -f1 | sort | tr '\n' ' ')"
mkdir sub
echo "image=registry.example/app:abc" >> "$TROUPE_OUTPUTS"
echo "compiled" >&2"#,
        )
        .with_env("GREETING", "hello world");
    let ship = bench
        .step(
            "ship",
            r#"echo "pwd=$(pwd)"
echo "step=$TROUPE_STEP run=$TROUPE_RUN attempt=$TROUPE_ATTEMPT"
echo "digest=sha256:0123" >> "$TROUPE_OUTPUTS""#,
        )
        .with_working_dir("sub");
    let spec =
        RunSpec::new("acme/app-build-7", 2, vec![compile, ship]).with_outputs(["image", "digest"]);
    let mut handle = mk_executor(Duration::from_secs(1))
        .start(spec, &bench.root())
        .unwrap();
    let work = handle.work_dir().unwrap().to_path_buf();
    let events = rest(&mut handle).await;

    let (phase, outputs, message) = finished(&events);
    assert_eq!(phase, Phase::Succeeded, "{message}");
    assert_eq!(
        outputs,
        BTreeMap::from([
            ("digest".to_string(), "sha256:0123".to_string()),
            ("image".to_string(), "registry.example/app:abc".to_string()),
        ])
    );
    assert_eq!(started(&events), ["compile", "ship"]);
    assert_eq!(step_end(&events, "compile").0, Phase::Succeeded);
    assert_eq!(step_end(&events, "ship").1, Some(0));

    let logs = logs(&events);
    let out = lines_of(&logs, "compile", LogStream::Stdout);
    assert_eq!(out[0], format!("home={}", work.display()));
    assert_eq!(out[1], "files=0", "a fresh work directory");
    assert_eq!(out[2], "greeting=hello world");
    // Nothing of the agent's environment leaks in (the test process has CARGO_* and more).
    let names: Vec<&str> = out[3]
        .trim_start_matches("env=")
        .split_whitespace()
        .collect();
    let allowed = [
        "GREETING",
        "HOME",
        "OUT",
        "PATH",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "TROUPE_ATTEMPT",
        "TROUPE_OUTPUTS",
        "TROUPE_RUN",
        "TROUPE_STEP",
        "TROUPE_WORKSPACE",
    ];
    assert!(names.iter().all(|n| allowed.contains(n)), "{names:?}");
    assert!(
        names.contains(&"TROUPE_OUTPUTS") && names.contains(&"PATH"),
        "{names:?}"
    );
    assert_eq!(
        lines_of(&logs, "compile", LogStream::Stderr),
        ["warning: deprecated flag", "compiled"]
    );
    let shipped = lines_of(&logs, "ship", LogStream::Stdout);
    assert_eq!(shipped[0], format!("pwd={}", work.join("sub").display()));
    assert_eq!(shipped[1], "step=ship run=acme/app-build-7 attempt=2");
    // Each step's lines come between its start and its end.
    let position = |wanted: &dyn Fn(&RunEvent) -> bool| events.iter().position(wanted).unwrap();
    let compile_end =
        position(&|e| matches!(e, RunEvent::StepFinished { step, .. } if step == "compile"));
    let first_ship_line = position(&|e| matches!(e, RunEvent::Log { step, .. } if step == "ship"));
    assert!(compile_end < first_ship_line);

    assert!(
        !work.exists(),
        "the work directory is removed when the run ends"
    );
    assert!(is_empty_dir(&bench.root()));
}

#[tokio::test]
async fn a_failing_step_names_itself_and_its_exit_code_and_later_steps_never_run() {
    let bench = Bench::new();
    let test = bench.step(
        "test",
        "echo 'running 12 tests'\necho '1 failed' >&2\nexit 3",
    );
    let after = bench.step("publish", r#"touch "$OUT/published""#);
    let spec = RunSpec::new("acme/b-1", 1, vec![test, after]);
    let mut handle = mk_executor(Duration::from_secs(1))
        .start(spec, &bench.root())
        .unwrap();
    let events = rest(&mut handle).await;

    let (phase, outputs, message) = finished(&events);
    assert_eq!(phase, Phase::Failed);
    assert_eq!(message, "step \"test\" exited with code 3");
    assert!(outputs.is_empty());
    assert_eq!(
        step_end(&events, "test"),
        (Phase::Failed, Some(3), "exited with code 3".into())
    );
    assert_eq!(started(&events), ["test"]);
    assert!(!bench.path("published").exists());
    let logs = logs(&events);
    assert_eq!(lines_of(&logs, "test", LogStream::Stderr), ["1 failed"]);
}

#[tokio::test]
async fn a_step_over_its_timeout_is_stopped_with_its_children() {
    let bench = Bench::new();
    // The child ignores SIGTERM; it goes with its group all the same.
    let hang = bench
        .step(
            "hang",
            r#"( trap '' TERM; exec sleep 60 ) &
echo $! > "$OUT/child"
echo $$ > "$OUT/leader"
echo ready
wait"#,
        )
        // Long enough for the pids to be read while the step still runs, on a busy machine.
        .with_timeout(Duration::from_secs(3));
    let spec = RunSpec::new("acme/b-2", 1, vec![hang]);
    let mut handle = mk_executor(Duration::from_secs(1))
        .start(spec, &bench.root())
        .unwrap();
    let (leader, child) = (bench.pid("leader").await, bench.pid("child").await);
    assert!(alive(leader) && alive(child));
    let events = rest(&mut handle).await;

    let (phase, _, message) = finished(&events);
    assert_eq!(phase, Phase::TimedOut, "{message}");
    assert!(
        message.starts_with("step \"hang\" went over its timeout of 3s"),
        "{message}"
    );
    assert_eq!(step_end(&events, "hang").0, Phase::TimedOut);
    assert_eq!(
        notes(&events),
        Vec::<String>::new(),
        "the output closed with the step"
    );
    assert!(gone(leader).await, "the step's process is gone");
    assert!(gone(child).await, "the child it started is gone");
}

#[tokio::test]
async fn what_a_step_leaves_running_is_killed_when_it_ends() {
    let bench = Bench::new();
    let daemon = bench.step(
        "daemon",
        r#"sleep 60 &
echo $! > "$OUT/child"
echo started"#,
    );
    let next_step = bench.step("next", "echo next");
    let spec = RunSpec::new("acme/b-11", 1, vec![daemon, next_step]);
    let mut handle = mk_executor(Duration::from_secs(1))
        .start(spec, &bench.root())
        .unwrap();
    let mut events = until_line(&mut handle, "started").await;
    let child = bench.pid("child").await;
    events.extend(rest(&mut handle).await);

    let (phase, _, message) = finished(&events);
    assert_eq!(phase, Phase::Succeeded, "{message}");
    // The leftover held the step's stdout: it was killed when the step ended, so the output
    // closed at once rather than being given up on.
    assert_eq!(notes(&events), Vec::<String>::new());
    assert!(gone(child).await, "the leftover process is gone");
}

#[tokio::test]
async fn the_run_timeout_covers_all_its_steps() {
    let bench = Bench::new();
    let quick = bench.step("quick", "echo done");
    let slow = bench.step("slow", "echo $$ > \"$OUT/leader\"\nexec sleep 60");
    let spec = RunSpec::new("acme/b-3", 1, vec![quick, slow]).with_timeout(Duration::from_secs(2));
    let mut handle = mk_executor(Duration::from_secs(1))
        .start(spec, &bench.root())
        .unwrap();
    let events = rest(&mut handle).await;

    let (phase, _, message) = finished(&events);
    assert_eq!(phase, Phase::TimedOut, "{message}");
    assert!(
        message.starts_with("step \"slow\" went over the run's timeout of 2s"),
        "{message}"
    );
    assert_eq!(step_end(&events, "quick").0, Phase::Succeeded);
    assert!(gone(bench.pid("leader").await).await);
}

#[tokio::test]
async fn cancel_sends_sigterm_and_a_step_that_exits_on_it_ends_within_the_grace() {
    let bench = Bench::new();
    let serve = bench.step(
        "serve",
        r#"trap 'echo "got TERM"; exit 0' TERM
echo $$ > "$OUT/leader"
sleep 60 &
echo $! > "$OUT/child"
echo ready
wait"#,
    );
    let spec = RunSpec::new("acme/b-4", 1, vec![serve]);
    let mut handle = mk_executor(Duration::from_secs(1))
        .start(spec, &bench.root())
        .unwrap();
    let mut events = until_line(&mut handle, "ready").await;
    let (leader, child) = (bench.pid("leader").await, bench.pid("child").await);
    let grace = Duration::from_secs(10);
    let cancelled = Instant::now();
    handle.cancel(grace);
    events.extend(rest(&mut handle).await);
    let took = cancelled.elapsed();

    let (phase, _, message) = finished(&events);
    assert_eq!(phase, Phase::Cancelled, "{message}");
    assert!(
        took < grace,
        "ended {took:?} after the cancel, before the grace of {grace:?}"
    );
    let logs = logs(&events);
    assert!(lines_of(&logs, "serve", LogStream::Stdout).contains(&"got TERM".to_string()));
    let (_, exit_code, step_message) = step_end(&events, "serve");
    assert_eq!(exit_code, Some(0));
    assert_eq!(step_message, "was cancelled; stopped with SIGTERM");
    assert!(gone(leader).await && gone(child).await);
}

#[tokio::test]
async fn cancel_kills_a_step_that_ignores_sigterm_once_the_grace_is_over() {
    let bench = Bench::new();
    let stubborn = bench.step(
        "stubborn",
        r#"trap '' TERM
echo $$ > "$OUT/leader"
sleep 60 &
echo $! > "$OUT/child"
echo ready
wait"#,
    );
    let spec = RunSpec::new("acme/b-5", 1, vec![stubborn]);
    let mut handle = mk_executor(Duration::from_secs(1))
        .start(spec, &bench.root())
        .unwrap();
    let mut events = until_line(&mut handle, "ready").await;
    let (leader, child) = (bench.pid("leader").await, bench.pid("child").await);
    let grace = Duration::from_secs(2);
    let cancelled = Instant::now();
    handle.cancel(grace);
    events.extend(rest(&mut handle).await);
    let took = cancelled.elapsed();

    let (phase, _, message) = finished(&events);
    assert_eq!(phase, Phase::Cancelled, "{message}");
    assert!(
        took >= grace,
        "SIGKILL only after the grace: ended after {took:?}"
    );
    assert!(
        took < grace * 2 + Duration::from_secs(3),
        "ended after {took:?}"
    );
    assert_eq!(
        step_end(&events, "stubborn"),
        (
            Phase::Cancelled,
            None,
            "was cancelled; killed with SIGKILL when its grace period ran out".into()
        )
    );
    assert!(gone(leader).await && gone(child).await);
}

#[tokio::test]
async fn a_hostile_parameter_arrives_byte_for_byte_and_nothing_in_it_runs() {
    let bench = Bench::new();
    let marker = |n: u32| bench.path(&format!("pwned-{n}"));
    let hostile = format!(
        "$(touch {}); rm -rf /nonexistent-troupe ; `touch {}` \"quoted\" 'single' \n newline $HOME ${{PATH}} * | tee {} && touch {}",
        marker(1).display(),
        marker(2).display(),
        marker(3).display(),
        marker(4).display(),
    );
    let receive = bench
        .step(
            "receive",
            r#"printf '%s' "$1" > "$OUT/arg"
printf '%s' "$HOSTILE" > "$OUT/env""#,
        )
        .with_env("HOSTILE", hostile.clone());
    let mut receive = receive;
    receive.command.push(hostile.clone());
    let echo = StepSpec::new("echo", ["printf", "%s\n", &hostile]);
    let spec = RunSpec::new("acme/b-6", 1, vec![receive, echo]);
    let mut handle = mk_executor(Duration::from_secs(1))
        .start(spec, &bench.root())
        .unwrap();
    let events = rest(&mut handle).await;

    let (phase, _, message) = finished(&events);
    assert_eq!(phase, Phase::Succeeded, "{message}");
    assert_eq!(fs::read(bench.path("arg")).unwrap(), hostile.as_bytes());
    assert_eq!(fs::read(bench.path("env")).unwrap(), hostile.as_bytes());
    let logs = logs(&events);
    assert_eq!(
        lines_of(&logs, "echo", LogStream::Stdout).join("\n"),
        hostile
    );
    for n in 1..=4 {
        assert!(!marker(n).exists(), "part of the parameter was executed");
    }
}

#[tokio::test]
async fn a_missing_required_output_fails_the_run_by_name() {
    let bench = Bench::new();
    let build = bench.step(
        "build",
        r#"echo "image=registry.example/app:1" >> "$TROUPE_OUTPUTS""#,
    );
    let spec = RunSpec::new("acme/b-7", 1, vec![build]).with_outputs(["image", "digest"]);
    let mut handle = mk_executor(Duration::from_secs(1))
        .start(spec, &bench.root())
        .unwrap();
    let events = rest(&mut handle).await;

    let (phase, outputs, message) = finished(&events);
    assert_eq!(phase, Phase::Failed);
    assert!(message.contains("required output `digest`"), "{message}");
    assert!(!message.contains("`image`"), "{message}");
    assert!(outputs.is_empty());
    assert_eq!(step_end(&events, "build").0, Phase::Succeeded);
}

#[tokio::test]
async fn a_relative_build_root_still_gives_steps_paths_that_work_from_their_directory() {
    let bench = Bench::new();
    // The same root, spelled relative to where the agent runs (as `--state-dir troupe-dev`
    // makes it): the steps run elsewhere, in their work directory.
    let cwd = std::env::current_dir().unwrap();
    let up = "../".repeat(cwd.components().count() - 1);
    let relative = PathBuf::from(up).join(bench.root().strip_prefix("/").unwrap());
    let build = bench.step(
        "build",
        r#"echo built > "$TROUPE_WORKSPACE/artifact" && echo "image=app:$(cat "$TROUPE_WORKSPACE/artifact")" >> "$TROUPE_OUTPUTS""#,
    );
    let spec = RunSpec::new("acme/b-9", 1, vec![build]).with_outputs(["image"]);
    let mut handle = mk_executor(Duration::from_secs(1))
        .start(spec, &relative)
        .unwrap();
    let events = rest(&mut handle).await;
    let (phase, outputs, message) = finished(&events);
    assert_eq!(phase, Phase::Succeeded, "{message}");
    assert_eq!(outputs["image"], "app:built");
}

#[tokio::test]
async fn a_working_dir_outside_the_work_dir_is_refused_before_anything_runs() {
    let bench = Bench::new();
    let first = bench.step("first", r#"touch "$OUT/first-ran""#);
    let escape = bench.step("escape", "true").with_working_dir("../../etc");
    let spec = RunSpec::new("acme/b-8", 1, vec![first, escape]);
    let error = mk_executor(Duration::from_secs(1))
        .start(spec, &bench.root())
        .unwrap_err();

    assert_eq!(
        error.to_string(),
        "run \"acme/b-8\", step \"escape\": working directory \"../../etc\" leaves the work directory (`..`)"
    );
    assert!(is_empty_dir(&bench.root()), "no work directory was made");
    // Polling for a file that must never appear proves little; the refusal came from
    // `start`, which spawns nothing, so the file is checked once.
    assert!(!bench.path("first-ran").exists());
}

#[tokio::test]
async fn a_megabyte_line_without_newline_arrives_cut_and_the_run_succeeds() {
    let bench = Bench::new();
    let flood = bench.step(
        "flood",
        "head -c 1048576 /dev/zero | tr '\\0' a\necho after >&2",
    );
    let spec = RunSpec::new("acme/b-9", 1, vec![flood]);
    let mut handle = mk_executor(Duration::from_secs(1))
        .start(spec, &bench.root())
        .unwrap();
    let events = rest(&mut handle).await;

    let (phase, _, message) = finished(&events);
    assert_eq!(phase, Phase::Succeeded, "{message}");
    let logs = logs(&events);
    let out = lines_of(&logs, "flood", LogStream::Stdout);
    let max = ProcessConfig::default().max_line_bytes;
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0],
        format!("{}{}", "a".repeat(max), cut_marker(1048576 - max))
    );
    assert_eq!(lines_of(&logs, "flood", LogStream::Stderr), ["after"]);
}

#[tokio::test]
async fn dropping_the_handle_mid_step_leaves_no_process_and_no_directory() {
    let bench = Bench::new();
    let step = bench.step(
        "long",
        r#"echo $$ > "$OUT/leader"
sleep 60 &
echo $! > "$OUT/child"
echo ready
wait"#,
    );
    let spec = RunSpec::new("acme/b-10", 1, vec![step]);
    let mut handle = mk_executor(Duration::from_secs(1))
        .start(spec, &bench.root())
        .unwrap();
    until_line(&mut handle, "ready").await;
    let (leader, child) = (bench.pid("leader").await, bench.pid("child").await);
    let work = handle.work_dir().unwrap().to_path_buf();
    assert!(alive(leader) && alive(child) && work.is_dir());
    drop(handle);

    assert!(gone(leader).await, "the step's process is gone");
    assert!(gone(child).await, "its child is gone");
    assert!(poll(|| (!work.exists()).then_some(())).await.is_some());
}
