//! `InProcess`: the gateway run inside the test binary through the library's entry point
//! (`markgate::serve`), on a listener the test bound to `127.0.0.1:0` — no child process,
//! no port race, no waiting for a log line. Stopped (and waited for) when dropped.

use std::thread::JoinHandle;

use markgate::config::Config;
use markgate::store::{Store, TrackingRecord};

pub struct InProcess {
    pub port: u16,
    pub config: Config,
    pub state: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Which front end to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Smtp,
    Milter,
}

impl InProcess {
    /// Runs `front` with `config` (its state dir replaced by a fresh one).
    pub fn start(front: Front, mut config: Config) -> InProcess {
        let state = tempfile::tempdir().expect("tempdir");
        config.state_dir = state.path().join("state");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let run_config = config.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let listener = match front {
                    Front::Smtp => markgate::Listener::Smtp(listener),
                    Front::Milter => markgate::Listener::Milter(
                        markgate::frontend::milter::Bound::Inet(listener),
                    ),
                };
                let _ = ready_tx.send(());
                let shutdown = async {
                    let _ = stopped.await;
                };
                if let Err(err) = markgate::serve(listener, run_config, shutdown).await {
                    panic!("in-process markgate failed: {err:#}");
                }
            });
        });
        ready_rx.recv().expect("in-process markgate started");
        InProcess {
            port,
            config,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every tracking record so far, through the store (an intent left out once its
    /// outcome is recorded).
    pub fn records(&self) -> Vec<TrackingRecord> {
        Store::open(&self.config)
            .expect("store")
            .tracking
            .records()
            .expect("records")
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
