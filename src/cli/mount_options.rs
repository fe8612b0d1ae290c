//! `-o` options, as mount(8), `mount -t fuse.recordfs` and an fstab line give them: every
//! `recordfs mount` option by its name (`sync=fsync`, `read_only` or `ro`, `max_file_size=N`),
//! the kernel's per-mount flags a FUSE mount takes (`nosuid`, `nodev`, `noexec`), and the
//! options that are mount(8)'s or systemd's business, accepted and left alone. mount.fuse3
//! runs `recordfs STORE MOUNTPOINT -o OPTIONS`: `helper_form` makes that `recordfs mount`.

use super::args::{EtcdAccess, MountArgs};
use crate::limits::{MAX_MAX_FILE_SIZE, MAX_THREADS, MIN_LOG_LIMIT};
use crate::mounting::KernelFlags;
use crate::options::SyncMode;

/// Options that mean something to mount(8), fstab or systemd, not to the filesystem; and
/// the access-time ones, which change nothing here (reads never change atime; see the README).
const LEFT_ALONE: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "async",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
    "default_permissions",
];

/// Applies every `-o` option to `args` (later ones win, as with mount(8)), and returns the
/// kernel flags they ask for. An unknown option or a bad value is an error naming it.
pub fn apply(args: &mut MountArgs) -> Result<KernelFlags, String> {
    let mut flags = KernelFlags::default();
    let options = std::mem::take(&mut args.options);
    for option in options.iter().flat_map(|o| o.split(',')) {
        let option = option.trim();
        if option.is_empty() {
            continue;
        }
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (option, None),
        };
        let name = name.replace('-', "_");
        let bad = |why: &str| format!("mount option {option:?}: {why}");
        let number = |lo: u64, hi: u64| -> Result<u64, String> {
            let v = value.ok_or_else(|| bad("needs a value (NAME=NUMBER)"))?;
            let n: u64 = v.parse().map_err(|_| bad("is not a number"))?;
            if !(lo..=hi).contains(&n) {
                return Err(bad(&format!("must be from {lo} to {hi}")));
            }
            Ok(n)
        };
        // A flag: sets `it` to `to`, and takes no value.
        let set = |it: &mut bool, to: bool| match value {
            None => {
                *it = to;
                Ok(())
            }
            Some(_) => Err(bad("takes no value")),
        };
        match name.as_str() {
            "sync" => {
                args.sync = match value {
                    // mount(8)'s own `sync`: writes are synchronous, which is the default.
                    None | Some("always") => SyncMode::Always,
                    Some("fsync") => SyncMode::Fsync,
                    Some("never") => SyncMode::Never,
                    Some(_) => return Err(bad("is one of sync=always, sync=fsync, sync=never")),
                }
            }
            "ro" | "read_only" => set(&mut args.read_only, true)?,
            "rw" => set(&mut args.read_only, false)?,
            "foreground" => set(&mut args.foreground, true)?,
            "allow_other" => set(&mut args.allow_other, true)?,
            "salvage" => set(&mut args.salvage, true)?,
            "verify" => set(&mut args.verify, true)?,
            "allow_open_store" => set(&mut args.allow_open_store, true)?,
            "allow_nan" => set(&mut args.allow_nan, true)?,
            "max_file_size" => args.max_file_size = number(1, MAX_MAX_FILE_SIZE)?,
            "threads" => args.threads = number(1, u64::from(MAX_THREADS))? as u16,
            "log_limit" => args.log_limit = Some(number(MIN_LOG_LIMIT, u64::MAX)?),
            "compact_every" => args.compact_every = number(0, u64::MAX)?,
            "keep_logs" => args.keep_logs = number(0, u32::MAX.into())? as usize,
            "nosuid" => set(&mut flags.nosuid, true)?,
            "nodev" => set(&mut flags.nodev, true)?,
            "noexec" => set(&mut flags.noexec, true)?,
            "suid" => set(&mut flags.nosuid, false)?,
            "dev" => set(&mut flags.nodev, false)?,
            "exec" => set(&mut flags.noexec, false)?,
            n if LEFT_ALONE.contains(&n) || n.starts_with("x_") || n == "comment" => {}
            _ => return Err(bad("unknown (see `man recordfs-mount`)")),
        }
    }
    if args.salvage && args.read_only {
        return Err("mount options: salvage and read-only do not go together".into());
    }
    Ok(flags)
}

/// Takes the `-o` options that say how to reach etcd (`cacert=FILE`, `cert=FILE`,
/// `key=FILE`, `etcd_user=NAME`, `password_file=FILE`: an fstab line has no environment) out
/// of `args` into `access`, before anything connects; `apply` then takes the rest. The
/// password itself is not taken in `-o`: mount(8) prints its options, and fstab is readable
/// by every user.
pub fn take_etcd_access(args: &mut MountArgs, access: &mut EtcdAccess) -> Result<(), String> {
    let mut rest = Vec::new();
    for option in args.options.iter().flat_map(|o| o.split(',')) {
        let (name, value) = option.trim().split_once('=').unwrap_or((option.trim(), ""));
        let slot = match name.replace('-', "_").as_str() {
            "cacert" => &mut access.cacert,
            "cert" => &mut access.cert,
            "key" => &mut access.key,
            "password_file" => &mut access.password_file,
            "etcd_user" => {
                if value.contains(':') {
                    return Err(format!(
                        "mount option {option:?}: a password is not taken in -o (password_file=FILE)"
                    ));
                }
                access.user = Some(value.to_owned());
                continue;
            }
            _ => {
                rest.push(option.to_owned());
                continue;
            }
        };
        if value.is_empty() {
            return Err(format!(
                "mount option {option:?}: needs a value (NAME=FILE)"
            ));
        }
        *slot = Some(value.into());
    }
    args.options = vec![rest.join(",")];
    Ok(())
}

/// The arguments as `recordfs mount` takes them: mount.fuse3 (and so `mount -t
/// fuse.recordfs` and fstab) runs `recordfs STORE MOUNTPOINT -o OPTIONS`, with no command
/// word and always with `-o` (at least `rw,dev,suid`). Any other command line is returned as
/// it is: a mistyped command (`recordfs chekc STORE`) must be refused, not mount anything.
pub fn helper_form(args: Vec<std::ffi::OsString>, commands: &[&str]) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str());
    let is_command_or_flag = first.is_none_or(|f| f.starts_with('-') || commands.contains(&f));
    let has_o = args
        .iter()
        .skip(3)
        .any(|a| a.to_str().is_some_and(|a| a.starts_with("-o")));
    if is_command_or_flag || args.len() < 4 || !has_o {
        return args;
    }
    let mut out = Vec::with_capacity(args.len() + 1);
    out.push(args[0].clone());
    out.push("mount".into());
    out.extend(args[1..].iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(line: &str) -> Result<(MountArgs, KernelFlags), String> {
        let words = std::iter::once("recordfs").chain(line.split_whitespace());
        let cli = super::super::Cli::try_parse_from(words).map_err(|e| e.to_string())?;
        let super::super::Command::Mount(mut args) = cli.command else {
            panic!("not a mount")
        };
        let flags = apply(&mut args)?;
        Ok((args, flags))
    }

    #[test]
    fn o_options_say_how_to_reach_etcd_but_never_a_password() {
        let words = "recordfs mount etcd://h:1/r M -o ro,cacert=/c.pem,cert=/u.pem,key=/u.key -o etcd_user=rec,password-file=/pw,nosuid";
        let mut cli = super::super::Cli::try_parse_from(words.split_whitespace()).unwrap();
        let super::super::Command::Mount(args) = &mut cli.command else {
            panic!("not a mount")
        };
        take_etcd_access(args, &mut cli.etcd).unwrap();
        let e = &cli.etcd;
        assert_eq!(e.cacert.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(e.cert.as_deref(), Some(std::path::Path::new("/u.pem")));
        assert_eq!(e.key.as_deref(), Some(std::path::Path::new("/u.key")));
        assert_eq!(
            e.password_file.as_deref(),
            Some(std::path::Path::new("/pw"))
        );
        assert_eq!(e.user.as_deref(), Some("rec"));
        let flags = apply(args).unwrap();
        assert!(args.read_only && flags.nosuid, "the rest still applies");
        let (mut a, mut e) = match super::super::Cli::try_parse_from(
            "recordfs mount S M -o etcd_user=rec:secret".split_whitespace(),
        )
        .unwrap()
        {
            super::super::Cli {
                command: super::super::Command::Mount(a),
                etcd,
            } => (a, etcd),
            _ => panic!("not a mount"),
        };
        let refused = take_etcd_access(&mut a, &mut e).unwrap_err();
        assert!(refused.contains("password_file"), "{refused}");
    }

    #[test]
    fn o_options_set_what_the_long_options_set() {
        let (a, f) = parse(
            "mount S M -o sync=fsync,ro,allow_other,max_file_size=4096 -o threads=4,nosuid,_netdev,nofail,defaults,noatime,x-systemd.requires=a.service,keep-logs=3",
        )
        .unwrap();
        assert_eq!(a.sync, SyncMode::Fsync);
        assert!(a.read_only && a.allow_other);
        assert_eq!((a.max_file_size, a.threads, a.keep_logs), (4096, 4, 3));
        assert_eq!(
            f,
            KernelFlags {
                nosuid: true,
                ..KernelFlags::default()
            }
        );
        // Later options win, as with mount(8).
        let (a, _) = parse("mount S M -o ro,sync=never,rw,sync").unwrap();
        assert!(!a.read_only);
        assert_eq!(a.sync, SyncMode::Always);
    }

    #[test]
    fn a_bad_o_option_is_refused_by_name() {
        for (line, words) in [
            ("mount S M -o sync=sometimes", "\"sync=sometimes\""),
            ("mount S M -o bogus", "\"bogus\": unknown"),
            ("mount S M -o threads=0", "from 1 to"),
            ("mount S M -o max_file_size=big", "not a number"),
            ("mount S M -o ro=1", "takes no value"),
            ("mount S M -o log_limit", "needs a value"),
            ("mount S M -o salvage,ro", "do not go together"),
        ] {
            let e = parse(line)
                .err()
                .unwrap_or_else(|| panic!("{line} was taken"));
            assert!(e.contains(words), "{line}: {e}");
        }
    }

    #[test]
    fn the_mount_helpers_command_line_becomes_a_mount() {
        let os = |l: &str| -> Vec<std::ffi::OsString> { l.split(' ').map(Into::into).collect() };
        let commands = ["mount", "check", "log"];
        assert_eq!(
            helper_form(os("recordfs /s /m -o rw,sync=fsync"), &commands),
            os("recordfs mount /s /m -o rw,sync=fsync")
        );
        for same in [
            "recordfs mount /s /m",
            "recordfs check /s",
            "recordfs --help",
            "recordfs x",
            "recordfs chekc /s /m",
            "recordfs /s /m",
            "recordfs mount /s /m -o ro",
        ] {
            assert_eq!(helper_form(os(same), &commands), os(same));
        }
    }
}
