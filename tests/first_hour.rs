//! End to end: what a newcomer meets in the first hour (issue: the first
//! hour): errors that say what is wrong and what to do, nothing left
//! behind by a failed command.

mod common;

use common::Berth;

/// A missing image whose registry cannot be reached: two facts, the image
/// is not in the store and the registry could not be reached.
#[test]
fn an_unreachable_registry_is_said_so() {
    let b = Berth::new();
    let err = b
        .run(&["run", "--rm", "127.0.0.1:1/nope:1", "true"])
        .fails(125);
    assert!(
        err.contains("127.0.0.1:1/nope:1: the image is not in the store")
            && err.contains("registry 127.0.0.1:1 could not be reached"),
        "{err}"
    );
}

/// A build that fails before its first step (a Dockerfile that does not
/// parse) leaves no scratch directory behind.
#[test]
fn a_failed_build_leaves_no_scratch() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let d = b.path("bad");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("Dockerfile"), "FROM busybox\nNOPE x\n").unwrap();
    let err = b.run(&["build", d.to_str().unwrap()]).fails(1);
    assert!(err.contains("Dockerfile:2"), "{err}");
    let builds = b.root().join("builds");
    let left: Vec<_> = std::fs::read_dir(&builds)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// `load` (and `import`, `save`) show a byte bar on a terminal, none with
/// `-q` or when the output is not a terminal; what was loaded is printed
/// either way (docker's load). The terminal is util-linux's `script`.
#[test]
fn load_shows_progress_on_a_terminal_only() {
    let b = Berth::new();
    b.import_busybox("busybox");
    let tar = b.path("bb.tar");
    b.run(&["save", "-o", tar.to_str().unwrap(), "busybox"])
        .ok();
    let other = b.path("other-root");
    let under_tty = |extra: &str| {
        let cmd = format!(
            "{} --root {} load {extra} -i {}",
            common::berth_bin(),
            other.display(),
            tar.display()
        );
        // A terminal that can redraw (a `dumb` one gets no bar, as from
        // indicatif everywhere).
        let o = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("TERM", "xterm")
            .output()
            .expect("script (util-linux)");
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let shown = under_tty("");
    assert!(shown.contains("Loading ["), "{shown}");
    assert!(shown.contains("Loaded image: busybox:latest"), "{shown}");
    let quiet = under_tty("-q");
    assert!(!quiet.contains("Loading ["), "{quiet}");
    assert!(quiet.contains("Loaded image: busybox:latest"), "{quiet}");
    let piped = b.run(&["load", "-i", tar.to_str().unwrap()]);
    assert_eq!(piped.ok(), "Loaded image: busybox:latest\n");
    assert!(!piped.stderr().contains("Loading"), "{}", piped.stderr());
}

/// One error style: `Error: …` on every command (berth has no daemon, so
/// never "Error response from daemon"), BuildKit's `ERROR: …` for a build;
/// docker's exit codes for usage: 1 for a missing argument, 125 for a bad
/// flag.
#[test]
fn errors_have_one_style() {
    let b = Berth::new();
    b.import_busybox("busybox");
    for args in [
        vec!["volume", "rm", "nope-vol"],
        vec!["rm", "nope-ctr"],
        vec!["network", "rm", "nope-net"],
        vec!["inspect", "nope-obj"],
        vec!["update", "--memory", "1m", "nope-ctr"],
    ] {
        let r = b.run(&args);
        assert_ne!(r.code(), 0, "{args:?}");
        let err = r.stderr();
        assert!(err.starts_with("Error: "), "{args:?}: {err}");
        assert!(
            !err.contains("from daemon") && !err.contains("berth:"),
            "{args:?}: {err}"
        );
    }
    let d = b.path("bad");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("Dockerfile"), "FROM busybox\nNOPE\n").unwrap();
    let err = b.run(&["build", "-q", d.to_str().unwrap()]).fails(1);
    assert!(err.starts_with("ERROR: "), "{err}");
    b.run(&["rm"]).fails(1);
    b.run(&["ps", "--bogus"]).fails(125);
}
