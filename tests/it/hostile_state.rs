//! A state dir that has been tampered with (part of the hostile-input suite): markgate writes
//! through no symlink it finds, deletes nothing it did not write, and refuses a state dir
//! (or subdirectory) that is not its own private directory.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::*;

/// `markgate serve` on `state`; returns (started?, its log). Started means it logged that
/// its SMTP front end is serving (port 0, so no other test's listener can be mistaken for
/// it); not started means it exited. A process that started is stopped by PID. The wait is
/// long: on a loaded 2-core CI machine a start-up can take seconds.
fn serve_on(state: &std::path::Path) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("markgate.yaml");
    let log_path = dir.path().join("markgate.log");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\nstate_dir: {}\nupstream:\n  address: 127.0.0.1:{}\n  tls: none\n",
            state.display(),
            free_port()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.success(), read());
        }
        let text = read();
        if text.contains("SMTP front end serving") {
            let _ = child.kill();
            let _ = child.wait();
            return (true, text);
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("markgate neither started nor exited in 60 s: {}", read());
}

#[test]
fn a_shared_or_symlinked_state_dir_is_refused_at_start_up() {
    // A world-writable sticky state dir (1777).
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (started, err) = serve_on(&state);
    assert!(!started, "started on a 1777 state dir: {err}");
    assert!(err.contains("mode 1777"), "{err}");

    // `quarantine` a symlink to another directory with a foreign .eml in it: refused, and
    // start-up recovery deletes nothing there.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let foreign = elsewhere.join("0123456789ABCDEF.eml");
    std::fs::write(&foreign, "not markgate's").unwrap();
    std::os::unix::fs::symlink(&elsewhere, state.join("quarantine")).unwrap();
    let (started, err) = serve_on(&state);
    assert!(!started, "started with a symlinked quarantine: {err}");
    assert!(err.contains("is a symlink"), "{err}");
    assert!(
        foreign.exists(),
        "a file markgate did not write was deleted"
    );
}

#[test]
fn planted_symlinks_in_the_state_dir_are_never_written_through() {
    let sink = Sink::start(&[]);
    let outside = tempfile::tempdir().unwrap();
    let send = |mg: &Markgate| {
        smtplib_send(
            mg.port,
            "jane@police.cjsm.net",
            &["bob@cps.cjsm.net"],
            &good_message("[OFFICIAL] through a link"),
        )
    };

    // A dangling `index.sqlite` link: the record is written, the index is not created at
    // the link's target (an index failure is logged; `track reindex` repairs it).
    let mg = Markgate::start(sink.port);
    let tracking = mg.state().join("tracking");
    std::fs::create_dir_all(&tracking).unwrap();
    let dangling = outside.path().join("made-by-markgate.sqlite");
    std::os::unix::fs::symlink(&dangling, tracking.join("index.sqlite")).unwrap();
    let (code, text) = send(&mg);
    assert_eq!(code, 250, "{text}");
    assert!(
        !dangling.exists(),
        "the index was created at a symlink's target"
    );
    drop(mg);

    // Today's tracking file as a symlink to a file elsewhere: never appended to; with
    // nowhere to record the message, it is deferred (fail closed).
    let mg = Markgate::start(sink.port);
    let tracking = mg.state().join("tracking");
    std::fs::create_dir_all(&tracking).unwrap();
    let target = outside.path().join("target.txt");
    std::fs::write(&target, "untouched\n").unwrap();
    let day = chrono_day();
    std::os::unix::fs::symlink(&target, tracking.join(format!("tracking-{day}.jsonl"))).unwrap();
    let (code, text) = send(&mg);
    assert_eq!(code, 451, "{text}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
    assert_eq!(sink.messages().len(), 1, "only the first message went on");
}

/// Today's date as markgate names its daily files (UTC).
fn chrono_day() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
