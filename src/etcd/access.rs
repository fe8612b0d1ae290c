//! How recordfs proves itself to a cluster that asks: TLS (the members' CA, and a client
//! certificate where they ask for one) and a user with a password, taken as etcdctl takes
//! them (`--cacert`, `--cert`, `--key`, `--user NAME[:PASSWORD]`, or `ETCDCTL_CACERT`,
//! `ETCDCTL_CERT`, `ETCDCTL_KEY`, `ETCDCTL_USER`, `ETCDCTL_PASSWORD`).
//!
//! One command talks to one cluster, so the access is the process's, set once at its start
//! (`set`) like etcdctl's global flags, and every connection (`super::member`) uses it. The
//! files are read at once, so that a path that is wrong fails the command at its start with
//! its name, not a mount's first reconnection hours later.

use std::path::Path;
use std::sync::OnceLock;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::error::{err, Error, Result};

/// The largest certificate, key or password file read (a chain of a few certificates is a
/// few KiB).
const MAX_FILE: u64 = 1 << 20;

#[derive(Clone, Default)]
pub struct Access {
    tls: Option<TlsOptions>,
    /// Whether `tls` has a client certificate.
    identity: bool,
    user: Option<(String, String)>,
}

/// What the command line and the environment say; `None` where they say nothing.
#[derive(Default)]
pub struct AccessArgs<'a> {
    pub cacert: Option<&'a Path>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    /// `NAME` or `NAME:PASSWORD`.
    pub user: Option<&'a str>,
    /// The password when `user` has none (`ETCDCTL_PASSWORD`, or a password file's line).
    pub password: Option<String>,
}

static ACCESS: OnceLock<Access> = OnceLock::new();

/// The bytes of a small file (a certificate, a key, a password), failing with its name.
pub fn read_small(p: &Path, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| Error::io(format!("reading the {what} {}", p.display()), &e))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(err!(EFBIG, "{}: a {what} of over 1 MiB", p.display()));
    }
    Ok(bytes)
}

impl Access {
    /// Reads the files `args` names. TLS is on when any of them is given: with `cacert`
    /// alone the members' certificates are checked against it; `cert` and `key` go together.
    pub fn from_args(args: AccessArgs) -> Result<Access> {
        let read = |what: &str, p: &Path| read_small(p, what);
        let identity = match (args.cert, args.key) {
            (Some(c), Some(k)) => Some(Identity::from_pem(
                read("client certificate", c)?,
                read("client key", k)?,
            )),
            (None, None) => None,
            _ => return Err(err!(EINVAL, "--cert and --key go together")),
        };
        let has_identity = identity.is_some();
        let tls = match (args.cacert, identity) {
            (None, None) => None,
            (ca, identity) => {
                let mut tls = TlsOptions::new();
                if let Some(ca) = ca {
                    tls = tls.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?));
                }
                if let Some(identity) = identity {
                    tls = tls.identity(identity);
                }
                Some(tls)
            }
        };
        let user = match args.user {
            None => None,
            Some(u) => match (u.split_once(':'), args.password) {
                (Some((name, password)), _) => Some((name.to_owned(), password.to_owned())),
                (None, Some(password)) => Some((u.to_owned(), password)),
                (None, None) => {
                    return Err(err!(
                    EINVAL,
                    "--user {u}: no password (NAME:PASSWORD, ETCDCTL_PASSWORD or --password-file)"
                ))
                }
            },
        };
        if user.as_ref().is_some_and(|(name, _)| name.is_empty()) {
            return Err(err!(EINVAL, "--user: an empty name"));
        }
        Ok(Access {
            tls,
            identity: has_identity,
            user,
        })
    }

    /// Makes this the access of every connection the process makes from now on. Once only.
    pub fn set(self) {
        if ACCESS.set(self).is_err() {
            panic!("the access to etcd is set once, at the command's start");
        }
    }

    /// `e`, a failure to connect, with what the process's access lacks where the failure is
    /// how members that ask for it answer without it: a member that takes only TLS clients
    /// closes a plain connection; one that asks for a client certificate closes a connection
    /// without one (or refuses it: "BadCertificate", EACCES).
    pub(super) fn explain(e: Error) -> Error {
        let access = ACCESS.get_or_init(Access::default);
        let lacks = match (&access.tls, access.identity) {
            (None, _) => "TLS (--cacert)",
            (Some(_), false) => "a client certificate (--cert, --key)",
            (Some(_), true) => return e,
        };
        match e.errno {
            libc::ECONNRESET | libc::EIO | libc::EACCES => Error::new(
                e.errno,
                format!("{} (a member that asks for {lacks} answers so)", e.reason),
            ),
            _ => e,
        }
    }

    /// The options of a new connection: the process's access, none if it set none.
    pub(super) fn connect_options() -> ConnectOptions {
        let access = ACCESS.get_or_init(Access::default);
        let mut o = ConnectOptions::new();
        if let Some(tls) = &access.tls {
            o = o.with_tls(tls.clone());
        }
        if let Some((name, password)) = &access.user {
            o = o.with_user(name.clone(), password.clone());
        }
        o
    }
}
