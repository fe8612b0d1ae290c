//! What the command line says about itself, in the forms shells and `man` read: shell
//! completions (`recordfs completions SHELL`, clap_complete) and man pages (`recordfs
//! manpages DIR`, clap_mangen), both made from the same definitions as `--help`, so they
//! cannot drift from it. scripts/install.sh puts both where the system looks for them.

use std::path::Path;

use clap::CommandFactory;

use super::args::Cli;

/// `recordfs completions SHELL`: the completion script on stdout.
pub(super) fn completions_command(shell: clap_complete::Shell) -> i32 {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "recordfs", &mut std::io::stdout());
    0
}

/// `recordfs manpages DIR`: recordfs.1 and recordfs-COMMAND.1 for each command, into DIR.
pub(super) fn manpages_command(dir: &Path) -> i32 {
    match write_manpages(dir) {
        Ok(n) => {
            println!("{n} man pages written to {}", dir.display());
            0
        }
        Err(e) => {
            eprintln!("recordfs: writing man pages to {}: {e}", dir.display());
            2
        }
    }
}

fn write_manpages(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let top = Cli::command();
    let mut pages = vec![("recordfs".to_owned(), top.clone())];
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("recordfs-{}", sub.get_name());
        // The page's own name, so that its synopsis reads `recordfs-mount`, as git's do.
        let mut page = sub.clone().name(name.clone());
        if let Some(version) = top.get_version() {
            page = page.version(version.to_owned());
        }
        pages.push((name, page));
    }
    for (name, cmd) in &pages {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
    }
    Ok(pages.len())
}
