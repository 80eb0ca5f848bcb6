//! Where and when a suite runs: the machine and its load (from `/proc` on Linux), the UTC time and
//! the git checkout. The `/proc` parsers and the calendar are pure functions, tested on fixed input;
//! what a platform does not tell is `None`, never an error.

use super::record::Machine;
use std::path::Path;
use std::process::{Command, Stdio};

/// The machine this process runs on.
pub(super) fn machine() -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    Machine {
        cpu: read("/proc/cpuinfo").as_deref().and_then(cpu_model),
        cpus: std::thread::available_parallelism().ok().map(|n| n.get()),
        mem_gib: read("/proc/meminfo").as_deref().and_then(mem_total_gib),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
    }
}

/// The 1-minute load average now, where `/proc/loadavg` tells it.
pub(super) fn load_now() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok().as_deref().and_then(load_1min)
}

/// The first `model name` of a `/proc/cpuinfo` text, its runs of spaces collapsed.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map(|(_, value)| value.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|model| !model.is_empty())
}

/// `MemTotal` of a `/proc/meminfo` text (kibibytes) in GiB, to one decimal.
fn mem_total_gib(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let mut words = line.split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    if words.next().is_some_and(|unit| unit != "kB") {
        return None;
    }
    Some((kib as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0)
}

/// The 1-minute load average, the first field of a `/proc/loadavg` text.
fn load_1min(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

/// The commit checked out in `root` (`git rev-parse HEAD`) and whether tracked files differ from
/// it (`git status --porcelain --untracked-files=no` prints anything); `(None, false)` without git.
pub(super) fn git_state(root: &Path) -> (Option<String>, bool) {
    let git = |args: &[&str]| {
        let out = Command::new("git").current_dir(root).args(args).stderr(Stdio::null()).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).filter(|c| !c.is_empty());
    let dirty = commit.is_some() && git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    (commit, dirty)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 143\n\
                           model name\t: Intel(R) Xeon(R)   Platinum 8481C CPU @ 2.70GHz\nflags\t\t: fpu vme\n\n\
                           processor\t: 1\nmodel name\t: Other\n";

    #[test]
    fn cpu_model_is_the_first_model_name() {
        assert_eq!(cpu_model(CPUINFO).as_deref(), Some("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"));
        // aarch64 kernels print no `model name`; an empty one is no model either.
        assert_eq!(cpu_model("processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n"), None);
        assert_eq!(cpu_model("model name\t:   \n"), None);
        assert_eq!(cpu_model(""), None);
    }

    #[test]
    fn mem_total_is_in_gib_to_one_decimal() {
        let meminfo = "MemTotal:       24567892 kB\nMemFree:         1234567 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(mem_total_gib(meminfo), Some(23.4));
        assert_eq!(mem_total_gib("MemTotal: 1048576 kB\n"), Some(1.0));
        assert_eq!(mem_total_gib("MemFree: 1048576 kB\n"), None);
        assert_eq!(mem_total_gib("MemTotal: lots kB\n"), None);
        assert_eq!(mem_total_gib("MemTotal: 1048576 MB\n"), None);
    }

    #[test]
    fn load_is_the_first_field_of_loadavg() {
        assert_eq!(load_1min("3.42 2.10 1.05 4/987 123456\n"), Some(3.42));
        assert_eq!(load_1min("0.00 0.01 0.05 1/100 1\n"), Some(0.0));
        assert_eq!(load_1min(""), None);
        assert_eq!(load_1min("high 1 1\n"), None);
        assert_eq!(load_1min("NaN 1 1\n"), None);
    }

    #[test]
    fn git_state_of_this_checkout_names_a_commit() {
        let (commit, _) = git_state(&crate::repo_root());
        // A source tarball has no .git: then there is no commit to name.
        if crate::repo_root().join(".git").exists() {
            let commit = commit.expect("a commit");
            assert!(commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()), "{commit}");
        }
        let outside = tempfile::tempdir().expect("temp dir");
        assert_eq!(git_state(outside.path()), (None, false));
    }
}
