//! A state dir that has been tampered with (part of the hostile-input suite): markgate writes
//! through no symlink it finds, deletes nothing it did not write, and refuses a state dir
//! (or subdirectory) that is not its own private directory.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::*;

/// `markgate serve` on `state`; returns (started?, stderr). A process that started is
/// stopped by PID.
fn serve_on(state: &std::path::Path) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("markgate.yaml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstate_dir: {}\nupstream:\n  address: 127.0.0.1:{}\n  tls: none\n",
            state.display(),
            free_port()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.success(), err);
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let _ = child.kill();
            let _ = child.wait();
            return (true, String::new());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    (true, String::new())
}

#[test]
fn a_shared_or_symlinked_state_dir_is_refused_at_start_up() {
    // A world-writable sticky state dir (1777).
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (started, err) = serve_on(&state);
    assert!(!started, "started on a 1777 state dir");
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
    assert!(!started, "started with a symlinked quarantine");
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
