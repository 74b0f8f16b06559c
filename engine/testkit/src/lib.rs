//! Throwaway services for tests that stop, restart or cluster them: each is
//! a process of the test's own on free loopback ports, stopped and removed
//! when dropped, so the shared services other tests use are never touched.
//!
//! - [`ThrowawayRedis`]: one `redis-server` that keeps nothing on disk.
//! - [`ThrowawayRedisCluster`]: three `redis-server` masters joined into a
//!   Redis Cluster by `redis-cli --cluster create`.
//! - [`ThrowawayPostgres`]: a cluster made by `initdb` and run by `pg_ctl`
//!   (as the `postgres` user when the tests run as root, which PostgreSQL
//!   refuses).
//!
//! And [`unique_component`], for tests that need bytes nothing has compiled.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The component `bytes` with a custom section of its own appended: the
/// same plugin, other bytes, so no compiled code cached anywhere (in memory,
/// in a shared database's artifacts) matches it.
pub fn unique_component(mut bytes: Vec<u8>, tag: &str) -> Vec<u8> {
    let name = b"mcp-test";
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(format!("{tag}-{}-{nanos}", std::process::id()).as_bytes());
    // A custom section (id 0) may come anywhere, the end included; its size
    // is unsigned LEB128.
    bytes.push(0);
    let mut size = section.len();
    loop {
        let low = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            bytes.push(low);
            break;
        }
        bytes.push(low | 0x80);
    }
    bytes.extend(section);
    bytes
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("a loopback port")
        .local_addr()
        .expect("a bound address")
        .port()
}

/// A fresh directory under the system's temporary one.
fn scratch_dir(kind: &str, port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-{kind}-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A `redis-server` that keeps nothing on disk; stopped when dropped.
pub struct ThrowawayRedis {
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    process: Option<Child>,
}

impl ThrowawayRedis {
    pub fn start() -> ThrowawayRedis {
        ThrowawayRedis::start_with(&[])
    }

    /// With extra `redis-server` arguments. A port found free can be taken
    /// before the server binds it (and a cluster node also needs the port
    /// 10000 above it): a server that exits at once is tried again on
    /// another port.
    fn start_with(extra: &[&str]) -> ThrowawayRedis {
        let cluster = extra.contains(&"--cluster-enabled");
        for _ in 0..10 {
            let port = free_port();
            let bus_free = !cluster
                || port
                    .checked_add(10_000)
                    .is_some_and(|bus| TcpListener::bind(("127.0.0.1", bus)).is_ok());
            if !bus_free {
                continue;
            }
            let mut redis = ThrowawayRedis {
                port,
                dir: scratch_dir("redis", port),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                process: None,
            };
            if redis.launch() {
                return redis;
            }
        }
        panic!("redis-server did not start on any of ten free ports");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it; what it held is gone.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts it (again) on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        assert!(
            self.launch(),
            "redis-server exited at start on {}: its port is taken",
            self.port
        );
    }

    /// Starts it on its port and waits until it answers; false if it exited
    /// first.
    fn launch(&mut self) -> bool {
        self.stop();
        let mut process = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let give_up = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(_)) = process.try_wait() {
                return false;
            }
            assert!(
                Instant::now() < give_up,
                "redis-server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.process = Some(process);
        true
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three masters, every hash slot assigned, no replicas.
pub struct ThrowawayRedisCluster {
    nodes: Vec<ThrowawayRedis>,
}

impl ThrowawayRedisCluster {
    pub fn start() -> ThrowawayRedisCluster {
        let nodes: Vec<ThrowawayRedis> = (0..3)
            .map(|_| {
                ThrowawayRedis::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        run(Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"]));
        let cluster = ThrowawayRedisCluster { nodes };
        cluster.wait_until_ok();
        cluster
    }

    /// Every node's URL, comma-separated: what `REDIS_URL` takes with
    /// `REDIS_CLUSTER=true`.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(ThrowawayRedis::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every node says the cluster is ok and knows all three.
    fn wait_until_ok(&self) {
        let give_up = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                let info = run(Command::new("redis-cli").args([
                    "-p",
                    &node.port.to_string(),
                    "cluster",
                    "info",
                ]));
                if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                    break;
                }
                assert!(Instant::now() < give_up, "the cluster never formed: {info}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A PostgreSQL cluster of the test's own; stopped and removed when
/// dropped.
pub struct ThrowawayPostgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl ThrowawayPostgres {
    /// `initdb` (trust authentication, user `postgres`), then starts it.
    pub fn start() -> ThrowawayPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server packages are installed")
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .find(|bin| bin.join("initdb").exists())
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let port = free_port();
        let postgres = ThrowawayPostgres {
            port,
            dir: scratch_dir("postgres", port),
            bin,
        };
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&postgres.dir));
        }
        let data = postgres.data();
        run(&mut postgres.as_owner(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        ));
        postgres.restart();
        postgres
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts it (again) on the same port, and waits until it answers.
    pub fn restart(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        let data = self.data();
        run(&mut self.as_owner(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        ));
    }

    /// A fast shutdown: sessions are cut, as when a database goes away.
    pub fn stop(&self) {
        let data = self.data();
        run(&mut self.as_owner("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]));
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// `program` of PostgreSQL's, run as the owner of the data directory.
    fn as_owner(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.args(args);
        command
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .as_owner("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}
