//! The command line: `recordfs mount` and the commands that work on a store offline.

mod args;
mod daemon;
mod docs;
mod etcd_history;
mod etcd_import;
mod etcd_log;
mod etcd_store;
mod history;
mod logging;
mod mount_options;
mod tools;
mod transfer;

use clap::{CommandFactory, Parser};

pub use args::{Cli, Command, EtcdAccess, MountArgs};

pub fn main() -> i32 {
    // Whatever the caller's umask, what recordfs creates in STORE gets exactly the private
    // modes it asks for (0600, 0700): a umask may narrow them, which would lock the daemon out
    // of its own files, never widen them.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let commands: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    let argv = mount_options::helper_form(std::env::args_os().collect(), &commands);
    let mut cli = Cli::parse_from(argv);
    if let Command::Mount(args) = &mut cli.command {
        if let Err(e) = mount_options::take_etcd_access(args, &mut cli.etcd) {
            eprintln!("recordfs: {e}");
            return 2;
        }
    }
    if let Err(e) = etcd_access(&cli.etcd) {
        eprintln!("recordfs: {e}");
        return 2;
    }
    match cli.command {
        Command::Mount(args) => daemon::mount_command(args),
        Command::Check { store } => tools::check_command(&store),
        Command::Log {
            store,
            name,
            since,
            until,
        } => tools::log_command(&store, name, since, until),
        Command::Compact {
            store,
            keep_logs,
            allow_open_store,
        } => tools::compact_command(&store, keep_logs, allow_open_store),
        Command::Rejected { store, json } => tools::rejected_command(&store, json),
        Command::Stats { store, json } => tools::stats_command(&store, json),
        Command::Import {
            store,
            file,
            format,
            id,
            dir,
            replace,
        } => transfer::import_command(&store, &file, format.as_deref(), &id, &dir, replace),
        Command::Export {
            store,
            file,
            format,
            dir,
        } => transfer::export_command(&store, file.as_deref(), format.as_deref(), &dir),
        Command::History { store, name, json } => history::history_command(&store, &name, json),
        Command::Show { store, name, at } => history::show_command(&store, &name, at.as_deref()),
        Command::Restore { store, name, at } => history::restore_command(&store, &name, &at),
        Command::Migrate { from, to } => etcd_store::migrate_command(&from, &to),
        Command::Completions { shell } => docs::completions_command(shell),
        Command::Manpages { dir } => docs::manpages_command(&dir),
    }
}

/// Reads what the command line and the environment say of how to reach etcd, for every
/// connection this process makes.
fn etcd_access(a: &EtcdAccess) -> crate::error::Result<()> {
    let password = match (&a.password_file, std::env::var("ETCDCTL_PASSWORD")) {
        (Some(f), _) => {
            let text = crate::etcd::read_small(f, "password file")?;
            let text = String::from_utf8_lossy(&text);
            Some(text.lines().next().unwrap_or("").to_owned())
        }
        (None, Ok(p)) => Some(p),
        (None, Err(_)) => None,
    };
    crate::etcd::Access::from_args(crate::etcd::AccessArgs {
        cacert: a.cacert.as_deref(),
        cert: a.cert.as_deref(),
        key: a.key.as_deref(),
        user: a.user.as_deref(),
        password,
    })?
    .set();
    Ok(())
}
