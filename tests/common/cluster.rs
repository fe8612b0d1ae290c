//! A real etcd cluster for tests: three members of Debian's etcd-server on free loopback
//! ports, each killed when the guard drops; and what the etcd tests share.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{sh, wait_until, Mount, BIN};

/// A cluster of three members on free loopback ports, killed when dropped.
pub struct Cluster {
    members: Vec<Option<Child>>,
    pub clients: Vec<String>,
    peers: Vec<String>,
    dir: tempfile::TempDir,
    /// Members each in a network namespace of their own (`start_in_namespaces`).
    net: Option<Net>,
    settings: Settings,
    /// Whether the cluster has its users and asks for one (`add_users` has run).
    users: std::sync::atomic::AtomicBool,
}

/// What a cluster asks of its clients, and how much it holds.
#[derive(Clone, Copy, Default)]
pub struct Settings {
    /// Clients connect with TLS, show a certificate of the cluster's CA, and log in as a user
    /// (`Secure` has the files and names).
    pub secure: bool,
    /// `--quota-backend-bytes`: past it, etcd raises its NOSPACE alarm and takes no more puts.
    pub quota: Option<u64>,
}

/// A secure cluster's CA, a client certificate of it (CN `client`, which is no user), and
/// its users: `root` (password `rootpw`) and `rec` (password `recpw`), who may read and write
/// keys under `/records/` only. Its members forget a token after 3 s unused.
pub struct Secure {
    pub cacert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Secure {
    /// `recordfs` options that reach the cluster as `rec`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--cacert".into(),
            self.cacert.display().to_string(),
            "--cert".into(),
            self.cert.display().to_string(),
            "--key".into(),
            self.key.display().to_string(),
            "--user".into(),
            "rec:recpw".into(),
        ]
    }

    /// The files of a secure cluster whose directory is `dir`.
    fn in_dir(dir: &Path) -> Secure {
        Secure {
            cacert: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client.key"),
        }
    }

    /// Makes a CA and the members' and the client's certificates in `dir`.
    fn make(dir: &Path) {
        let (code, out) = sh(&format!(
            "set -e; cd {}; \
             openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=recordfs-test-ca \
               -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE \
               -addext keyUsage=critical,keyCertSign,cRLSign; \
             printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > server.ext; \
             printf 'extendedKeyUsage=clientAuth\n' > client.ext; \
             for who in server client; do \
               openssl req -newkey rsa:2048 -nodes -subj /CN=$who -keyout $who.key -out $who.csr; \
               openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
                 -extfile $who.ext -out $who.pem; \
             done",
            dir.display()
        ));
        assert_eq!(code, 0, "making the certificates: {out}");
    }
}

/// Three network namespaces, each with two veths whose other ends are on two bridges in this
/// one: clients reach the members through the first (which has the first address of its
/// subnet), the members reach each other through the second. A member is cut off by taking
/// its veths down: both, or only the one to its peers.
struct Net {
    tag: String,
}

impl Net {
    /// The namespaces, and the subnets (first three octets) of the clients' and the peers'
    /// networks.
    fn new() -> (Net, String, String) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{:x}", (pid % 4096) * 16 + n % 16);
        let clients = format!("10.{}.{}", 200 + pid % 50, n % 250);
        let peers = format!("10.{}.{}", 150 + pid % 50, n % 250);
        let net = Net { tag };
        let mut cmds = vec![format!("ip link add {} type bridge", net.bridge("c"))];
        cmds.push(format!("ip link add {} type bridge", net.bridge("p")));
        cmds.push(format!(
            "ip addr add {clients}.1/24 dev {}",
            net.bridge("c")
        ));
        cmds.push(format!("ip link set {} up", net.bridge("c")));
        cmds.push(format!("ip link set {} up", net.bridge("p")));
        for i in 0..3 {
            let ns = net.ns(i);
            cmds.extend([
                format!("ip netns add {ns}"),
                format!("ip netns exec {ns} ip link set lo up"),
            ]);
            for (side, subnet) in [("c", &clients), ("p", &peers)] {
                let (outer, inner) = (net.outer(side, i), net.inner(side, i));
                cmds.extend([
                    format!("ip link add {outer} type veth peer name {inner}"),
                    format!("ip link set {inner} netns {ns}"),
                    format!("ip link set {outer} master {}", net.bridge(side)),
                    format!("ip link set {outer} up"),
                    format!(
                        "ip netns exec {ns} ip addr add {subnet}.{}/24 dev {inner}",
                        10 + i
                    ),
                    format!("ip netns exec {ns} ip link set {inner} up"),
                ]);
            }
        }
        for cmd in cmds {
            let (code, out) = sh(&cmd);
            assert_eq!(code, 0, "{cmd}: {out}");
        }
        (net, clients, peers)
    }
    /// `side`: "c" for the clients' network, "p" for the peers'.
    fn bridge(&self, side: &str) -> String {
        format!("rfs{}{side}b", self.tag)
    }
    fn ns(&self, i: usize) -> String {
        format!("rfs{}n{i}", self.tag)
    }
    fn outer(&self, side: &str, i: usize) -> String {
        format!("rfs{}{side}v{i}", self.tag)
    }
    fn inner(&self, side: &str, i: usize) -> String {
        format!("rfs{}{side}e{i}", self.tag)
    }
    fn set(&self, side: &str, i: usize, state: &str) {
        let (code, out) = sh(&format!("ip link set {} {state}", self.outer(side, i)));
        assert_eq!(code, 0, "{out}");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The outer ends first: a namespace may outlive its deletion for a while (the kernel
        // frees it later), and its veth pair with it.
        for i in 0..3 {
            for side in ["c", "p"] {
                sh(&format!("ip link del {}", self.outer(side, i)));
            }
            sh(&format!("ip netns del {}", self.ns(i)));
        }
        for side in ["c", "p"] {
            sh(&format!("ip link del {}", self.bridge(side)));
        }
    }
}

/// A loopback port nobody listens on, below the range Linux gives out for outgoing
/// connections (32768 and up), so that no connection of a test running beside this one takes
/// it between here and the member's bind; different for each call in this process, and from
/// a block of its own for each process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let block = 20_000 + (std::process::id() % 50) * 200;
    loop {
        let port = (block + NEXT.fetch_add(1, Ordering::Relaxed) % 200) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(Settings::default())
    }

    pub fn start_with(settings: Settings) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut c = Cluster {
            members: vec![None, None, None],
            clients: ports
                .iter()
                .map(|(c, _)| format!("127.0.0.1:{c}"))
                .collect(),
            peers: ports
                .iter()
                .map(|(_, p)| format!("127.0.0.1:{p}"))
                .collect(),
            dir,
            net: None,
            settings,
            users: Default::default(),
        };
        if settings.secure {
            Secure::make(c.dir.path());
        }
        for i in 0..3 {
            c.spawn(i);
        }
        c.wait_healthy();
        if settings.secure {
            c.add_users();
        }
        c
    }

    /// The files of a secure cluster.
    pub fn secure(&self) -> Secure {
        assert!(self.settings.secure, "a secure cluster");
        Secure::in_dir(self.dir.path())
    }

    /// Users `root` and `rec` (who may change `/records/` only), then authentication on.
    fn add_users(&self) {
        for args in [
            &["user", "add", "root:rootpw"][..],
            &["user", "grant-role", "root", "root"],
            &["user", "add", "rec:recpw"],
            &["role", "add", "rec"],
            &[
                "role",
                "grant-permission",
                "rec",
                "--prefix=true",
                "readwrite",
                "/records/",
            ],
            &["user", "grant-role", "rec", "rec"],
            &["auth", "enable"],
        ] {
            let out = self.etcdctl(args).unwrap();
            assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        }
        self.users.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// etcdctl with what the cluster asks of clients (as root, once there are users).
    fn etcdctl_command(&self) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3");
        if self.settings.secure {
            let s = self.secure();
            c.env("ETCDCTL_CACERT", &s.cacert)
                .env("ETCDCTL_CERT", &s.cert)
                .env("ETCDCTL_KEY", &s.key);
        }
        if self.users.load(std::sync::atomic::Ordering::Relaxed) {
            c.env("ETCDCTL_USER", "root:rootpw");
        }
        c
    }

    /// A cluster whose members are each in a network namespace of their own, reached
    /// through a bridge: `cut` and `heal` partition one.
    pub fn start_in_namespaces() -> Cluster {
        let (net, clients, peers) = Net::new();
        let at = |subnet: &str, i: usize, port: u16| format!("{subnet}.{}:{port}", 10 + i);
        let mut c = Cluster {
            members: vec![None, None, None],
            clients: (0..3).map(|i| at(&clients, i, 2379)).collect(),
            peers: (0..3).map(|i| at(&peers, i, 2380)).collect(),
            dir: tempfile::tempdir().unwrap(),
            net: Some(net),
            settings: Settings::default(),
            users: Default::default(),
        };
        for i in 0..3 {
            c.spawn(i);
        }
        c.wait_healthy();
        c
    }

    /// Cuts member `i` off from the others and from every client (its links go down).
    pub fn cut(&self, i: usize) {
        let net = self.net.as_ref().expect("a cluster in namespaces");
        net.set("c", i, "down");
        net.set("p", i, "down");
    }

    /// Cuts member `i` off from the others only: clients still reach it, and it answers
    /// them from a state that no longer moves.
    pub fn cut_from_peers(&self, i: usize) {
        let net = self.net.as_ref().expect("a cluster in namespaces");
        net.set("p", i, "down");
    }

    /// Joins a cut member again.
    pub fn heal(&self, i: usize) {
        let net = self.net.as_ref().expect("a cluster in namespaces");
        net.set("c", i, "up");
        net.set("p", i, "up");
    }

    /// Whether member `i` answers and has a leader.
    pub fn member_healthy(&self, i: usize) -> bool {
        self.etcdctl_command()
            .args(["--endpoints", &self.clients[i], "--command-timeout", "2s"])
            .args(["endpoint", "health"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Starts member `i` (again: with the data it had).
    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> = (0..3)
            .map(|j| format!("m{j}=http://{}", self.peers[j]))
            .collect();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("m{i}.log")))
            .unwrap();
        let (client, peer) = (&self.clients[i], &self.peers[i]);
        let scheme = match self.settings.secure {
            true => "https",
            false => "http",
        };
        let mut command = match &self.net {
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &net.ns(i), "etcd"]);
                c
            }
            None => Command::new("etcd"),
        };
        let child = command
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("m{i}")))
            .args(["--listen-client-urls", &format!("{scheme}://{client}")])
            .args(["--advertise-client-urls", &format!("{scheme}://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "recordfs-test"])
            .args(self.member_settings())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd (scripts/setup.sh installs etcd-server)");
        self.members[i] = Some(child);
    }

    /// A member's flags for the cluster's settings.
    fn member_settings(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.settings.secure {
            let dir = self.dir.path();
            for (flag, file) in [
                ("--cert-file", "server.pem"),
                ("--key-file", "server.key"),
                ("--trusted-ca-file", "ca.pem"),
            ] {
                args.extend([flag.to_owned(), dir.join(file).display().to_string()]);
            }
            args.push("--client-cert-auth".to_owned());
            // Tokens expire after 3 s unused (300 s by default), so that tests see it happen.
            args.push("--auth-token-ttl=3".to_owned());
        }
        if let Some(q) = self.settings.quota {
            args.push(format!("--quota-backend-bytes={q}"));
        }
        args
    }

    pub fn wait_healthy(&self) {
        let healthy = wait_until(Duration::from_secs(30), || {
            self.etcdctl(&["endpoint", "health"])
                .is_ok_and(|o| o.status.success())
        });
        if !healthy {
            let logs: Vec<String> = (0..3)
                .map(|i| {
                    let log = fs::read_to_string(self.dir.path().join(format!("m{i}.log")))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(8).collect();
                    format!("m{i}:\n{}", tail.join("\n"))
                })
                .collect();
            panic!(
                "the cluster did not become healthy within 30 s; its members' logs, newest first:\n{}",
                logs.join("\n")
            );
        }
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.clients.join(","))
    }

    pub fn etcdctl(&self, args: &[&str]) -> std::io::Result<Output> {
        self.etcdctl_command()
            .arg("--endpoints")
            .arg(self.clients.join(","))
            .args(["--command-timeout", "5s"])
            .args(args)
            .output()
    }

    /// The cluster's newest revision (as the first member that answers says).
    pub fn revision(&self) -> String {
        let status = self
            .etcdctl(&["endpoint", "status", "-w", "fields"])
            .unwrap();
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("\"Revision\""))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no revision in {status:?}"))
    }

    /// The member that leads now (asked of each member in turn, for at most 10 s).
    pub fn leader(&self) -> usize {
        let mut found = None;
        let ok = wait_until(Duration::from_secs(10), || {
            for (i, client) in self.clients.iter().enumerate() {
                if self.members[i].is_none() {
                    continue;
                }
                let out = self
                    .etcdctl_command()
                    .args(["--endpoints", client, "endpoint", "status", "-w", "fields"])
                    .output();
                let Ok(out) = out else { continue };
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let field = |name: &str| {
                    text.lines()
                        .find(|l| l.starts_with(&format!("\"{name}\"")))
                        .and_then(|l| l.split(':').nth(1))
                        .map(|v| v.trim().to_string())
                };
                if field("MemberID").is_some() && field("MemberID") == field("Leader") {
                    found = Some(i);
                    return true;
                }
            }
            false
        });
        assert!(ok, "no member says it leads");
        found.unwrap()
    }

    /// SIGSTOP of member `i`: it holds its connections open and answers nothing, as a
    /// member cut off by the network does.
    pub fn freeze(&self, i: usize) {
        let pid = self.members[i].as_ref().expect("a running member").id();
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    }

    /// SIGCONT of a frozen member `i`.
    pub fn thaw(&self, i: usize) {
        let pid = self.members[i].as_ref().expect("a running member").id();
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGCONT) }, 0);
    }

    /// SIGKILL of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].is_none(), "member {i} is running");
        self.spawn(i);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// `recordfs ARGS...`: (exit code, stdout+stderr).
pub fn tool(args: &[&str]) -> (i32, String) {
    let (code, text, _) = tool_with(args, &[]);
    (code, text)
}

/// `recordfs ARGS...` with `env`: (exit code, stdout+stderr, how long it took).
pub fn tool_with(args: &[&str], env: &[(&str, &str)]) -> (i32, String, std::time::Duration) {
    let started = std::time::Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text, started.elapsed())
}

/// Every path under `root` with what `stat` says of it (kind, mode, owner, links, size, mtime),
/// its bytes' digest and its extended attributes, sorted.
pub fn describe_tree(root: &Path) -> String {
    describe_tree_as(root, "%Y")
}

/// `describe_tree` with mtimes to the nanosecond: two mounts of one store in etcd show the
/// same times exactly.
pub fn describe_tree_exactly(root: &Path) -> String {
    describe_tree_as(root, "%.9Y")
}

fn describe_tree_as(root: &Path, mtime: &str) -> String {
    let (code, out) = sh(&format!(
        "cd {} && find . -mindepth 1 | sort | while read -r f; do \
           stat -c '%n %F %a %u:%g %h %s {mtime}' \"$f\"; \
           [ -f \"$f\" ] && [ ! -L \"$f\" ] && md5sum < \"$f\"; \
           [ -L \"$f\" ] && readlink \"$f\"; \
           getfattr -h -d -m - \"$f\" 2>/dev/null | grep -v '^#' || true; \
         done",
        root.display()
    ));
    assert_eq!(code, 0, "{out}");
    out
}

/// A mount point and a log for mounts of one cluster's prefixes.
pub struct Place {
    pub dir: tempfile::TempDir,
    pub mnt: PathBuf,
}

impl Place {
    pub fn new() -> Place {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        Place { dir, mnt }
    }

    pub fn mount(&self, url: &str, args: &[&str]) -> Result<Mount, String> {
        let log = self.dir.path().join("daemon.log");
        Mount::start_from(
            url.as_ref(),
            &log,
            &self.mnt,
            args,
            "info,recordfs::etcd=debug",
        )
    }

    /// What the daemons mounted here said.
    pub fn mount_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }
}

pub fn record_name(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000.json")
}

/// `recordfs check` of the prefix: must find it sound.
pub fn assert_sound(url: &str) {
    let (code, out) = tool(&["check", url]);
    assert_eq!(code, 0, "check of {url}: {out}");
}

/// The cache directory the daemon said it built.
pub fn cache_in(log: &str) -> PathBuf {
    let line = log
        .lines()
        .find(|l| l.contains(" cached in "))
        .expect("the daemon says where its cache is");
    let rest = line.rsplit(" cached in ").next().unwrap();
    PathBuf::from(rest.split(", ").next().unwrap().trim())
}
