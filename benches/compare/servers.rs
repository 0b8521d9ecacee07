//! The server peers' processes: PostgreSQL and Redis started on 127.0.0.1 with their data in
//! the run's temporary directory, killed (SIGKILL to the whole process group) and restarted
//! for the recovery workload, and stopped at the end of the run. A server that is not installed
//! is skipped with a line saying how to install it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

/// Every server of the run; `Err` says why one is not available.
pub struct Servers {
    pub postgres: Result<Server, String>,
    pub redis: Result<Server, String>,
}

impl Servers {
    /// No servers (child processes, render-only runs).
    pub fn none() -> Servers {
        Servers {
            postgres: Err("not started".to_owned()),
            redis: Err("not started".to_owned()),
        }
    }

    pub fn start(root: &Path, postgres: bool, redis: bool) -> Servers {
        Servers {
            postgres: if postgres {
                Server::start_postgres(&root.join("postgres"))
            } else {
                Err("not selected".to_owned())
            },
            redis: if redis {
                Server::start_redis(&root.join("redis"))
            } else {
                Err("not selected".to_owned())
            },
        }
    }

    pub fn postgres_missing(&self) -> Option<String> {
        self.postgres.as_ref().err().cloned()
    }

    pub fn redis_missing(&self) -> Option<String> {
        self.redis.as_ref().err().cloned()
    }

    pub fn stop(self) {
        for server in [self.postgres, self.redis].into_iter().flatten() {
            server.stop();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Postgres,
    Redis,
}

/// One running server.
pub struct Server {
    pub kind: ServerKind,
    pub port: u16,
    command: Vec<String>,
    user: Option<(u32, u32)>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

/// Where a program is: on `PATH`, or in one of `extra` directories.
fn find_program(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// uid and gid of `user` from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

fn signal(pid_or_group: &str, sig: &str) {
    let status = Command::new("kill")
        .args([sig, "--", pid_or_group])
        .stderr(Stdio::null())
        .status();
    if let Err(e) = status {
        eprintln!("warning: kill {sig} {pid_or_group}: {e}");
    }
}

impl Server {
    fn start_postgres(dir: &Path) -> Result<Server, String> {
        let mut extra = vec![PathBuf::from("/usr/local/bin")];
        if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
            extra.extend(versions.flatten().map(|v| v.path().join("bin")));
        }
        let (Some(postgres), Some(initdb)) = (
            find_program("postgres", &extra),
            find_program("initdb", &extra),
        ) else {
            return Err("PostgreSQL not installed (apt-get install postgresql)".to_owned());
        };
        // PostgreSQL refuses to run as root: run it as the `postgres` user then.
        let user =
            if running_as_root() {
                Some(user_ids("postgres").ok_or(
                    "running as root and there is no `postgres` user to run the server as",
                )?)
            } else {
                None
            };
        // Leftovers of an earlier run, if any (absent is the normal case).
        let _ = std::fs::remove_dir_all(dir);
        let data = dir.join("data");
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir:?}: {e}"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {dir:?}: {e}"))?;
        }
        let mut init = Command::new(&initdb);
        init.args([
            "-D",
            &data.to_string_lossy(),
            "-U",
            "bench",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some((uid, gid)) = user {
            init.uid(uid).gid(gid);
        }
        let out = init.output().map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = free_port()?;
        let command = vec![
            postgres.to_string_lossy().into_owned(),
            "-D".into(),
            data.to_string_lossy().into_owned(),
            "-p".into(),
            port.to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "unix_socket_directories=".into(),
            "-c".into(),
            "max_connections=200".into(),
            "-c".into(),
            "fsync=on".into(),
        ];
        let server = Server {
            kind: ServerKind::Postgres,
            port,
            command,
            user,
            log: dir.join("server.log"),
            child: Mutex::new(None),
        };
        server.spawn_and_wait()?;
        Ok(server)
    }

    fn start_redis(dir: &Path) -> Result<Server, String> {
        let Some(redis) = find_program("redis-server", &[]) else {
            return Err("Redis not installed (apt-get install redis-server)".to_owned());
        };
        // Leftovers of an earlier run, if any (absent is the normal case).
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir:?}: {e}"))?;
        let port = free_port()?;
        let command = vec![
            redis.to_string_lossy().into_owned(),
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.to_string_lossy().into_owned(),
            "--appendonly".into(),
            "yes".into(),
            "--appendfsync".into(),
            "everysec".into(),
            "--save".into(),
            "".into(),
            "--daemonize".into(),
            "no".into(),
        ];
        let server = Server {
            kind: ServerKind::Redis,
            port,
            command,
            user: None,
            log: dir.join("server.log"),
            child: Mutex::new(None),
        };
        server.spawn_and_wait()?;
        Ok(server)
    }

    /// Starts the server process (its own process group) and waits until it answers.
    fn spawn_and_wait(&self) -> Result<Duration, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("opening {:?}: {e}", self.log))?;
        let log2 = log.try_clone().map_err(|e| format!("log: {e}"))?;
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        let start = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.command[0]))?;
        *self.child.lock().map_err(|_| "server mutex poisoned")? = Some(child);
        let deadline = start + Duration::from_secs(600);
        loop {
            if self.answers() {
                return Ok(start.elapsed());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{:?} did not answer within 600 s; see {:?}",
                    self.kind, self.log
                ));
            }
            if let Some(child) = self
                .child
                .lock()
                .map_err(|_| "server mutex poisoned")?
                .as_mut()
            {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{:?} exited with {status}; see {:?}",
                        self.kind, self.log
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the server accepts a connection and answers a trivial query (not while it is
    /// still replaying its log).
    fn answers(&self) -> bool {
        match self.kind {
            ServerKind::Postgres => {
                postgres::Client::connect(&self.postgres_url(), postgres::NoTls)
                    .and_then(|mut c| c.simple_query("SELECT 1"))
                    .is_ok()
            }
            ServerKind::Redis => redis::Client::open(self.redis_url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok(),
        }
    }

    pub fn postgres_url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=bench dbname=postgres",
            self.port
        )
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Process id of the server's main process.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().ok()?.as_ref().map(Child::id)
    }

    /// SIGKILL to the whole process group (no shutdown work), then restart and time until the
    /// server answers again: its crash recovery.
    pub fn kill_and_restart(&self) -> Result<Duration, String> {
        self.kill()?;
        self.spawn_and_wait()
    }

    pub fn kill(&self) -> Result<(), String> {
        let mut slot = self.child.lock().map_err(|_| "server mutex poisoned")?;
        if let Some(mut child) = slot.take() {
            signal(&format!("-{}", child.id()), "-KILL");
            child
                .wait()
                .map_err(|e| format!("waiting for the killed server: {e}"))?;
            // Children of the group (PostgreSQL backends) may outlive the leader briefly.
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The directory holding the server's data (and its log).
    pub fn data_dir(&self) -> PathBuf {
        self.log.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    fn stop(self) {
        let Ok(mut slot) = self.child.lock() else {
            return;
        };
        if let Some(mut child) = slot.take() {
            // PostgreSQL: SIGINT is a fast shutdown; Redis: SIGTERM.
            let sig = match self.kind {
                ServerKind::Postgres => "-INT",
                ServerKind::Redis => "-TERM",
            };
            signal(&child.id().to_string(), sig);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            signal(&format!("-{}", child.id()), "-KILL");
            let _ = child.wait();
        }
    }
}

/// Whether this process runs as root (real uid 0).
fn running_as_root() -> bool {
    crate::proc_mem::status_kib(None, "Uid") == Some(0)
}
