//! A real dnsmasq on a free loopback port, serving records a test
//! changes: A records from a hosts file (re-read on SIGHUP), SRV records
//! from its command line (changed by a restart on the same port). It
//! touches no system configuration: no resolv.conf, no /etc/hosts, its own
//! pid file, and every name under `.test` is answered locally (an unknown
//! one is NXDOMAIN).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Dnsmasq {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    srv: Vec<String>,
    child: Option<Child>,
}

/// A free UDP and TCP port on 127.0.0.1.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Dnsmasq {
    /// Starts serving `hosts` (lines of `IP NAME`) and `srv` (dnsmasq
    /// `--srv-host` values: `_service._tcp.name,target,port,priority,weight`).
    pub fn start(hosts: &str, srv: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // dnsmasq started as root drops to `nobody`, who must still read
        // the hosts file when it is re-read on SIGHUP.
        set_mode(dir.path(), 0o755);
        let mut dnsmasq = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            srv: srv.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        dnsmasq.write_hosts(hosts);
        dnsmasq.run();
        dnsmasq
    }

    fn hosts_path(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    fn write_hosts(&self, hosts: &str) {
        std::fs::write(self.hosts_path(), hosts).unwrap();
        set_mode(&self.hosts_path(), 0o644);
    }

    fn run(&mut self) {
        let mut command = Command::new(binary());
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--local=/test/",
            "--local-ttl=1",
            "--log-facility=-",
        ]);
        command.arg(format!("--port={}", self.addr.port()));
        command.arg(format!("--addn-hosts={}", self.hosts_path().display()));
        command.arg(format!(
            "--pid-file={}",
            self.dir.path().join("pid").display()
        ));
        for srv in &self.srv {
            command.arg(format!("--srv-host={srv}"));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq starts");
        self.child = Some(child);
        // Ready when it answers on TCP.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "dnsmasq did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Serves `hosts` from now on (written, then SIGHUP).
    pub fn set_hosts(&self, hosts: &str) {
        self.write_hosts(hosts);
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Writes the hosts file without telling the server (it reads it when
    /// it starts again).
    pub fn set_hosts_while_stopped(&self, hosts: &str) {
        self.write_hosts(hosts);
    }

    /// Serves these SRV records from now on: a restart on the same port.
    pub fn set_srv(&mut self, srv: &[&str]) {
        self.stop();
        self.srv = srv.iter().map(|s| s.to_string()).collect();
        self.run();
    }

    /// Stops the server (by its PID, through the child handle).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same records.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// dnsmasq's binary: `.ci/run` installs it (Debian's dnsmasq-base).
fn binary() -> PathBuf {
    for candidate in ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("dnsmasq is not installed: apt-get install -y --no-install-recommends dnsmasq-base");
}
