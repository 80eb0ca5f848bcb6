//! A writer killed with SIGKILL in the middle of `save` leaves the previous checkpoint intact.

use crate::common;

use checkpoint::{load, save, Checkpoint, Metadata, TensorData};
use std::path::Path;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "PETAL_CHECKPOINT_KILL_TEST_TARGET";

/// About 48 MB of tensors whose content is determined by `generation`.
fn big(generation: u64) -> Checkpoint {
    let mut c = Checkpoint { meta: Metadata::default(), tensors: Default::default() };
    c.meta.hyperparameters = serde_json::json!({ "generation": generation });
    for i in 0..4u64 {
        let v = common::values(generation * 100 + i, 3_000_000);
        c.tensors.insert(format!("layer{i}.weight"), TensorData::from_f32(vec![3000, 1000], &v));
    }
    c
}

/// Child mode: save ever-new generations to the target until killed. Run only by the test below.
#[test]
#[ignore = "helper process for killed_writer_leaves_previous_checkpoint_intact"]
fn child_writer() {
    let Some(target) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    for generation in 1.. {
        save(Path::new(&target), &big(generation)).unwrap();
    }
}

/// libtest's name of [`child_writer`] in this binary: its module path without the crate
/// (`atomic_kill::child_writer`), so the child runs exactly that test.
fn child_test_name() -> String {
    let module = module_path!().split_once("::").map_or("", |(_crate, rest)| rest);
    if module.is_empty() {
        "child_writer".into()
    } else {
        format!("{module}::child_writer")
    }
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.contains(".tmp-")).collect()
}

#[test]
fn killed_writer_leaves_previous_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model.petal");
    save(&target, &big(0)).unwrap();
    let mut killed_mid_write = 0;
    for attempt in 0..6 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &child_test_name(), "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &target)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the child has a temp file with some bytes in it, then kill it.
        let start = Instant::now();
        loop {
            let growing = temp_files(dir.path()).iter().any(|n| std::fs::metadata(dir.path().join(n)).map(|m| m.len() > 1 << 20).unwrap_or(false));
            if growing || start.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let left = temp_files(dir.path());
        if !left.is_empty() {
            killed_mid_write += 1;
        }
        // The target is a complete checkpoint of one generation: the last one fully saved.
        let c = load(&target).unwrap_or_else(|e| panic!("attempt {attempt}: target damaged: {e}"));
        let generation = c.meta.hyperparameters["generation"].as_u64().unwrap();
        assert_eq!(c.tensors, big(generation).tensors, "attempt {attempt}");
        eprintln!("attempt {attempt}: killed with temp files {left:?}; target holds generation {generation}");
        // A later save works and cleans up what the dead writer left.
        save(&target, &big(0)).unwrap();
        assert!(temp_files(dir.path()).is_empty(), "stale temp files removed: {:?}", temp_files(dir.path()));
        if killed_mid_write >= 2 {
            break;
        }
    }
    assert!(killed_mid_write >= 1, "the writer was never caught mid-save");
}
