//! BIRD 2, run by the node agent for drivers that speak BGP (WIT 0.2
//! `bgp`). One BIRD per node, with its own files under
//! `<state-dir>/bird/` (configuration, control socket, pid file, log), in
//! the node's network namespace (the daemon's own). The agent renders the
//! configuration from the speaker record ([`config`]), starts BIRD,
//! reloads it through its control socket when the speaker changes,
//! restarts it if it dies, and stops it when the last speaker goes or the
//! daemon stops (BIRD then withdraws the node's routes from its peers).
//! A BIRD left running by a daemon that was killed is adopted, not
//! restarted: the node's routes do not flap across a daemon restart.

pub mod config;
pub mod control;
pub mod status;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netshim_host_api::host::bgp::BgpSpeaker;
use netshim_host_api::private;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("path {0:?} cannot be written into BIRD's configuration")]
    Path(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "BIRD is not installed (no `bird` on PATH or in /usr/sbin; Debian: apt-get install bird2)"
    )]
    Missing,
    #[error("BIRD's control socket {path}: {message}")]
    Control { path: String, message: String },
    #[error("BIRD refused the configuration: {0}")]
    Refused(String),
    #[error(transparent)]
    Private(#[from] netshim_host_api::private::PrivateError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BirdError {
    let what = what.into();
    move |source| BirdError::Io { what, source }
}

/// The `bird` binary: `NETSHIM_BIRD`, else on PATH, else Debian's.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NETSHIM_BIRD") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("bird"))
        .find(|p| p.is_file())
}

/// BIRD's files for one node.
#[derive(Debug, Clone)]
pub struct Files {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub ctl: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
    pub log_backup: PathBuf,
    pub stderr: PathBuf,
}

impl Files {
    pub fn new(state_dir: &Path) -> Files {
        let dir = state_dir.join("bird");
        Files {
            conf: dir.join("bird.conf"),
            ctl: dir.join("bird.ctl"),
            pid: dir.join("bird.pid"),
            log: dir.join("bird.log"),
            log_backup: dir.join("bird.log.1"),
            stderr: dir.join("bird.stderr"),
            dir,
        }
    }

    /// The running BIRD that serves these files, from its pid file: a live
    /// process (not a zombie) whose command line names this control socket.
    pub fn running_pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(&self.pid).ok()?.trim().parse().ok()?;
        if pid <= 1 {
            return None;
        }
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The state follows the command name's closing parenthesis.
        let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
        if state == 'Z' || state == 'X' {
            return None;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ctl = self.ctl.as_os_str().as_encoded_bytes();
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == ctl)
            .then_some(pid)
    }
}

enum Process {
    /// Started by this agent: reaped by it.
    Child(Child),
    /// Left by an earlier daemon: watched through /proc.
    Adopted(i32),
}

/// Restarts after a death back off from 1 s to 30 s.
const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);

pub struct Supervisor {
    files: Files,
    process: Option<Process>,
    /// The configuration BIRD runs (as last written and accepted).
    running_conf: Option<String>,
    /// What the speaker records ask for now.
    wanted: Option<String>,
    /// The records have been read at least once: before that an adopted
    /// BIRD is left alone, not stopped for want of a speaker.
    synced: bool,
    /// A configuration BIRD refused: not tried again until it changes.
    refused: Option<String>,
    next_start: Instant,
    backoff: Duration,
}

impl Supervisor {
    pub fn new(state_dir: &Path) -> Supervisor {
        let files = Files::new(state_dir);
        let process = files.running_pid().map(|pid| {
            tracing::info!(pid, "adopting the BIRD a previous daemon started");
            Process::Adopted(pid)
        });
        // An adopted BIRD runs the file as it is on disk.
        let running_conf = process
            .as_ref()
            .and_then(|_| fs::read_to_string(&files.conf).ok());
        Supervisor {
            files,
            process,
            running_conf,
            wanted: None,
            synced: false,
            refused: None,
            next_start: Instant::now(),
            backoff: RESTART_MIN,
        }
    }

    /// Follow the speaker records: render, then start, reload or stop.
    pub fn sync(&mut self, speakers: &BTreeMap<String, BgpSpeaker>) {
        self.synced = true;
        // The host lets one network per node speak BGP.
        self.wanted = match speakers.values().next() {
            None => None,
            Some(sp) => match config::render(
                sp,
                &config::Paths {
                    log: &self.files.log,
                    log_backup: &self.files.log_backup,
                },
            ) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "cannot render BIRD's configuration");
                    return;
                }
            },
        };
        self.tick();
    }

    /// Keep BIRD as wanted: called often (it only looks at the process
    /// unless something is to be done).
    pub fn tick(&mut self) {
        if !self.synced {
            return;
        }
        if !self.alive() {
            if self.process.take().is_some() {
                tracing::warn!(
                    stderr = %self.last_stderr(),
                    "BIRD died; restarting it"
                );
                self.next_start = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(RESTART_MAX);
            }
            self.running_conf = None;
        }
        let Some(wanted) = self.wanted.clone() else {
            if self.process.is_some() {
                self.stop();
            }
            return;
        };
        if self.process.is_none() {
            if Instant::now() < self.next_start {
                return;
            }
            match self.start(&wanted) {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot start BIRD");
                    self.next_start = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(RESTART_MAX);
                }
            }
            return;
        }
        if self.running_conf.as_deref() != Some(wanted.as_str())
            && self.refused.as_deref() != Some(wanted.as_str())
        {
            match self.reload(&wanted) {
                Ok(()) => {
                    tracing::info!("BIRD reconfigured");
                    self.running_conf = Some(wanted);
                    self.refused = None;
                }
                Err(e) => {
                    // BIRD keeps what it ran, which is then not what is
                    // wanted: tried again when the speaker changes, and a
                    // restarted BIRD starts from the wanted file.
                    tracing::error!(error = %e, "BIRD reconfiguration failed; it keeps the last configuration");
                    self.refused = Some(wanted);
                }
            }
        }
    }

    fn alive(&mut self) -> bool {
        match &mut self.process {
            None => false,
            Some(Process::Child(c)) => matches!(c.try_wait(), Ok(None)),
            Some(Process::Adopted(pid)) => self.files.running_pid() == Some(*pid),
        }
    }

    fn last_stderr(&self) -> String {
        let s = fs::read_to_string(&self.files.stderr).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(3).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    fn write_conf(&self, text: &str) -> Result<(), BirdError> {
        private::dir(&self.files.dir)?;
        let tmp = self.files.dir.join("bird.conf.new");
        let mut f = private::create(&tmp)?;
        f.write_all(text.as_bytes())
            .map_err(io(tmp.display().to_string()))?;
        fs::rename(&tmp, &self.files.conf).map_err(io(self.files.conf.display().to_string()))
    }

    fn start(&mut self, wanted: &str) -> Result<(), BirdError> {
        let bird = binary().ok_or(BirdError::Missing)?;
        self.write_conf(wanted)?;
        // A socket left by a BIRD that died would make the new one fail.
        let _ = fs::remove_file(&self.files.ctl);
        let stderr = private::create(&self.files.stderr)?;
        let child = Command::new(&bird)
            .arg("-f")
            .arg("-c")
            .arg(&self.files.conf)
            .arg("-s")
            .arg(&self.files.ctl)
            .arg("-P")
            .arg(&self.files.pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(io(format!("starting {}", bird.display())))?;
        tracing::info!(pid = child.id(), conf = %self.files.conf.display(), "BIRD started");
        self.process = Some(Process::Child(child));
        self.running_conf = Some(wanted.to_string());
        Ok(())
    }

    fn reload(&mut self, wanted: &str) -> Result<(), BirdError> {
        self.write_conf(wanted)?;
        control::configure(&self.files.ctl, &self.files.conf)
    }

    /// Stop BIRD (it withdraws this node's routes from its peers).
    pub fn stop(&mut self) {
        let pid = match &self.process {
            None => return,
            Some(Process::Child(c)) => c.id() as i32,
            Some(Process::Adopted(p)) => *p,
        };
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.alive() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            if let Some(Process::Child(c)) = &mut self.process {
                let _ = c.wait();
            }
        }
        tracing::info!(pid, "BIRD stopped");
        self.process = None;
        self.running_conf = None;
        let _ = fs::remove_file(&self.files.pid);
    }
}
