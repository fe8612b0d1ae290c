//! scripts/install.sh and what it installs (issue 13): the binary, a man page for recordfs and
//! each command (exit codes and examples in them), and completions for bash, zsh and fish
//! that complete recordfs's commands and options.
//!
//! Guards against: a part missing or put where the system does not look, a completion
//! script that does not parse or complete, and man pages without the exit codes.

use std::fs;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_recordfs");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {said}");
    said
}

#[test]
fn install_puts_the_binary_man_pages_and_completions_in_place() {
    let dest = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    run(Command::new("bash")
        .arg(&script)
        .env("DESTDIR", dest.path())
        .env("PREFIX", "/usr/local")
        .env("RECORDFS_BIN", BIN));
    let root = dest.path().join("usr/local");
    let installed = root.join("bin/recordfs");
    assert!(run(Command::new(&installed).arg("--version")).starts_with("recordfs "));

    let man = root.join("share/man/man1");
    for page in [
        "recordfs",
        "recordfs-mount",
        "recordfs-check",
        "recordfs-stats",
    ] {
        let text = fs::read_to_string(man.join(format!("{page}.1"))).unwrap();
        assert!(text.contains(".TH"), "{page}.1 is not a man page");
    }
    let top = fs::read_to_string(man.join("recordfs.1")).unwrap();
    assert!(top.contains("Exit status"), "{top}");
    let mount = fs::read_to_string(man.join("recordfs-mount.1")).unwrap();
    assert!(
        mount.contains("fuse.recordfs") && mount.contains("fstab"),
        "{mount}"
    );

    // bash: the script parses and completes commands and options.
    let bash = root.join("share/bash-completion/completions/recordfs");
    // As bash calls it: COMP_WORDS and COMP_CWORD set, and the command, the word being
    // completed and the word before it as arguments.
    let complete = |words: &[&str]| {
        let (cur, prev) = (words[words.len() - 1], words[words.len() - 2]);
        run(Command::new("bash").arg("-c").arg(format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; _recordfs recordfs '{cur}' '{prev}'; \
             echo \"${{COMPREPLY[@]}}\"",
            bash.display(),
            words.join(" "),
            words.len() - 1
        )))
    };
    let commands = complete(&["recordfs", "co"]);
    assert!(
        commands.contains("completions") && commands.contains("compact"),
        "{commands}"
    );
    assert!(!commands.contains("mount"), "{commands}");
    let options = complete(&["recordfs", "mount", "--sy"]);
    assert!(options.contains("--sync"), "{options}");
    let zsh = fs::read_to_string(root.join("share/zsh/site-functions/_recordfs")).unwrap();
    assert!(zsh.starts_with("#compdef recordfs"), "{zsh}");
    let fish =
        fs::read_to_string(root.join("share/fish/vendor_completions.d/recordfs.fish")).unwrap();
    assert!(fish.contains("complete -c recordfs"), "{fish}");
    assert_eq!(
        run(Command::new(BIN).args(["completions", "bash"])),
        fs::read_to_string(&bash).unwrap()
    );
}
