//! Sharded batch prediction as the batch engines run it: the real `petal` binary started as N
//! processes at once with exactly the environment a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`,
//! plus the `PETAL_SHARDS` that deploy/kubernetes/predict-job.yaml sets) or a Slurm array
//! (`SLURM_ARRAY_*` of `--array=1-3`, and of deploy/slurm/predict-array.sbatch's `PETAL_SHARDS`
//! style) gives each task; `petal merge` must then write the same bytes as one process, CSV and
//! JSON lines. A missing or damaged part is named with the command that reruns that shard, the
//! rerun repairs it, and merging twice is harmless. With a local S3-compatible server (moto, on
//! 127.0.0.1) the same job reads its images from and writes its parts and output to a bucket.
//!
//! Feature extraction (`petal train --extract-only`) shards the same way: N processes write parts
//! of the frozen feature caches (two augmented views and the validation split) or of the partial
//! activation caches, `petal merge <cache-dir>` must give the caches one process computes, value for
//! value, and a plain `petal train` must then reuse them.
//!
//! Data: the synthetic flowers of `tests/it/common` (3 classes), a tiny random DenseNet trained 1 epoch
//! (a random EfficientNet-Lite0 for partial mode, which needs one).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{config, make_dataset, ok};

/// The `petal` binary under test: `$PETAL_TEST_BIN` when set (a copy, safe from concurrent builds
/// into a shared target folder), else cargo's.
pub(crate) fn petal() -> Command {
    Command::new(std::env::var_os("PETAL_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_petal").into()))
}

/// Environment variables of the batch engines, removed from every child so the test's own
/// environment cannot leak a shard into the single-process run.
const ENGINE_VARS: [&str; 8] = [
    "JOB_COMPLETION_INDEX",
    "PETAL_SHARDS",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_ARRAY_JOB_ID",
];

pub(crate) struct Fixture {
    _tmp: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) images: PathBuf,
    ckpt: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let data = dir.join("data");
    make_dataset(&data, 6, 9, 0);
    let cfg = config(&dir, "tiny", &[]);
    let text = std::fs::read_to_string(&cfg).expect("read").replace("epochs = 12", "epochs = 1");
    std::fs::write(&cfg, text).expect("write");
    let mut train = petal();
    train
        .args(["train", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .arg("--runs-dir")
        .arg(dir.join("runs"))
        .arg("--cache-dir")
        .arg(dir.join("cache"));
    ok(train.output().expect("train"), "petal train");
    Fixture { images: data.join("valid"), ckpt: dir.join("runs/tiny/best.safetensors"), dir, _tmp: tmp }
}

/// `petal predict` of `inputs` into `out`, with `env` as the engine's variables.
pub(crate) fn predict(f: &Fixture, inputs: &str, out: &str, env: &[(&str, String)]) -> Command {
    let mut c = petal();
    ENGINE_VARS.iter().for_each(|v| {
        c.env_remove(v);
    });
    c.args(["predict", inputs, "--top-k", "3", "--batch-size", "4", "--chunk-images", "4", "--checkpoint"]).arg(&f.ckpt);
    c.arg(if out.ends_with(".jsonl") { "--jsonl" } else { "--csv" }).arg(out);
    c.envs(env.iter().map(|(k, v)| (*k, v.as_str()))).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Starts every task at once (as the engine does), then waits for all.
pub(crate) fn run_all(children: Vec<Child>) {
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(out.status.success(), "a shard failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn merge(out: &str) -> std::process::Output {
    petal().args(["merge", out]).output().expect("merge")
}

pub(crate) fn kubernetes_env(index: u32, shards: u32) -> Vec<(&'static str, String)> {
    vec![("JOB_COMPLETION_INDEX", index.to_string()), ("PETAL_SHARDS", shards.to_string())]
}

/// What Slurm sets for task `id` of `--array=min-max`.
fn slurm_env(id: u32, min: u32, max: u32) -> Vec<(&'static str, String)> {
    vec![
        ("SLURM_ARRAY_JOB_ID", "4242".into()),
        ("SLURM_ARRAY_TASK_ID", id.to_string()),
        ("SLURM_ARRAY_TASK_MIN", min.to_string()),
        ("SLURM_ARRAY_TASK_MAX", max.to_string()),
        ("SLURM_ARRAY_TASK_COUNT", (max - min + 1).to_string()),
        ("SLURM_ARRAY_TASK_STEP", "1".into()),
    ]
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn engine_shards_merge_into_one_process_output() {
    let f = fixture();
    let images = f.images.to_string_lossy().into_owned();
    let out = |name: &str| f.dir.join(name).to_string_lossy().into_owned();
    ok(predict(&f, &images, &out("single.csv"), &[]).output().expect("single"), "single-process predict");
    ok(predict(&f, &images, &out("single.jsonl"), &[]).output().expect("single"), "single-process predict");
    let single = read(&f.dir.join("single.csv"));
    assert_eq!(String::from_utf8_lossy(&single).lines().count(), 1 + 27, "header + 27 images");

    // Kubernetes Indexed Job, completions 3: all three pods at once.
    run_all((0..3).map(|k| predict(&f, &images, &out("k8s.csv"), &kubernetes_env(k, 3)).spawn().expect("spawn")).collect());
    ok(merge(&out("k8s.csv")), "merge");
    assert_eq!(read(&f.dir.join("k8s.csv")), single, "merged Kubernetes shards differ from one process");
    // Every shard got work (the hash spreads 27 paths over 3 shards).
    for k in 0..3 {
        let part = String::from_utf8(read(&f.dir.join(format!("k8s.csv.parts/part-{k:05}-of-00003.csv")))).expect("utf8");
        assert!(part.lines().count() > 1, "shard {k} is empty:\n{part}");
    }

    // Slurm array --array=1-3 (IDs from 1), JSON lines.
    run_all((1..=3).map(|id| predict(&f, &images, &out("slurm.jsonl"), &slurm_env(id, 1, 3)).spawn().expect("spawn")).collect());
    ok(merge(&out("slurm.jsonl")), "merge");
    assert_eq!(read(&f.dir.join("slurm.jsonl")), read(&f.dir.join("single.jsonl")), "merged Slurm shards differ from one process");
    // Merging again is harmless.
    ok(merge(&out("slurm.jsonl")), "second merge");
    assert_eq!(read(&f.dir.join("slurm.jsonl")), read(&f.dir.join("single.jsonl")));

    // Concurrent writers of one output (issue 30): two merges at once, and two single-process
    // predictions into one CSV at once, each succeed and leave a whole file, never an interleaving.
    std::fs::remove_file(f.dir.join("k8s.csv")).expect("remove the merged file");
    let both: Vec<_> = (0..2).map(|_| petal().args(["merge", &out("k8s.csv")]).stderr(Stdio::piped()).spawn().expect("spawn merge")).collect();
    for c in both {
        ok(c.wait_with_output().expect("merge"), "concurrent merge");
    }
    assert_eq!(read(&f.dir.join("k8s.csv")), single, "two concurrent merges left another file");
    let both: Vec<_> = (0..2).map(|_| predict(&f, &images, &out("twice.csv"), &[]).stderr(Stdio::piped()).spawn().expect("spawn predict")).collect();
    for c in both {
        ok(c.wait_with_output().expect("predict"), "concurrent predict --csv");
    }
    assert_eq!(read(&f.dir.join("twice.csv")), single, "two concurrent predictions into one CSV left another file");
}

#[test]
fn a_missing_or_damaged_shard_is_named_and_rerun_alone() {
    let f = fixture();
    let images = f.images.to_string_lossy().into_owned();
    let out = f.dir.join("p.csv").to_string_lossy().into_owned();
    ok(predict(&f, &images, &f.dir.join("single.csv").to_string_lossy(), &[]).output().expect("single"), "single");
    // The sbatch script's style: PETAL_SHARDS fixed, task IDs are shard indices; shard 1 never ran.
    for id in [0, 2] {
        ok(predict(&f, &images, &out, &[("SLURM_ARRAY_TASK_ID", id.to_string()), ("PETAL_SHARDS", "3".into())]).output().expect("run"), "shard");
    }
    let parts = f.dir.join("p.csv.parts");
    let err = String::from_utf8_lossy(&merge(&out).stderr).into_owned();
    assert!(err.contains("shard 1/3: missing"), "{err}");
    assert!(!f.dir.join("p.csv").exists(), "a failed merge wrote the output");
    // The printed command reruns shard 1 alone.
    let rerun = err.lines().skip_while(|l| !l.contains("shard 1/3")).nth(1).expect("rerun command line").trim().to_string();
    assert!(rerun.ends_with("--shard 1/3"), "{rerun}");
    let mut sh = Command::new("sh");
    ENGINE_VARS.iter().for_each(|v| {
        sh.env_remove(v);
    });
    let status = sh.arg("-c").arg(&rerun).current_dir(&f.dir).status().expect("sh");
    assert!(status.success(), "{rerun}");
    ok(merge(&out), "merge after the rerun");
    assert_eq!(read(&f.dir.join("p.csv")), read(&f.dir.join("single.csv")));

    // A damaged part (one byte flipped) and a torn manifest are named too.
    let part = parts.join("part-00002-of-00003.csv");
    let mut bytes = read(&part);
    bytes[10] ^= 0x20;
    std::fs::write(&part, bytes).expect("write");
    std::fs::write(parts.join("part-00000-of-00003.manifest.json"), "{\"format\": \"petal.p").expect("write");
    let err = String::from_utf8_lossy(&merge(&out).stderr).into_owned();
    assert!(err.contains("shard 0/3: the manifest cannot be read") && err.contains("--shard 0/3"), "{err}");
    assert!(err.contains("shard 2/3: damaged") && err.contains("--shard 2/3"), "{err}");
    assert_eq!(read(&f.dir.join("p.csv")), read(&f.dir.join("single.csv")), "a failed merge changed the output");
}

#[test]
fn bad_shard_settings_are_refused_with_the_variable_named() {
    let f = Fixture { _tmp: tempfile::tempdir().expect("tempdir"), dir: PathBuf::new(), images: PathBuf::new(), ckpt: PathBuf::from("unused") };
    let run = |args: &[&str], env: &[(&str, String)]| {
        let mut c = predict(&f, "x.png", "o.csv", env);
        c.args(args);
        String::from_utf8_lossy(&c.output().expect("run").stderr).into_owned()
    };
    assert!(run(&["--shard", "3/3"], &[]).contains("K must be below N"));
    assert!(run(&[], &[("JOB_COMPLETION_INDEX", "1".into())]).contains("PETAL_SHARDS"));
    assert!(run(&[], &slurm_env(5, 0, 3)).contains("SLURM_ARRAY_TASK_ID"));
}

/// A moto S3 server on 127.0.0.1, stopped when dropped.
pub(crate) struct Moto {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python that can run `moto.server`: `$PETAL_MOTO_PYTHON`, the reference Python, or `python3`.
fn moto_python() -> Option<PathBuf> {
    let candidates = [std::env::var_os("PETAL_MOTO_PYTHON").map(PathBuf::from), Some(testkit::python()), Some(PathBuf::from("python3"))];
    candidates.into_iter().flatten().find(|py| Command::new(py).args(["-c", "import moto.server, flask"]).output().is_ok_and(|o| o.status.success()))
}

/// Starts moto on port 0 (the system picks a free one: no bind-release-rebind race with other
/// tests) and reads the port it bound from its startup line (werkzeug: " * Running on
/// http://127.0.0.1:PORT"). A thread keeps draining its log so it never blocks on a full pipe.
fn start_moto(py: &Path) -> Moto {
    use std::io::BufRead;
    let mut child = Command::new(py)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start moto");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut log = String::new();
        let mut sent = false;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                log.push_str(&line);
                log.push('\n');
                if let Some(port) = line.split("http://127.0.0.1:").nth(1).and_then(|r| r.trim().trim_end_matches('/').parse::<u16>().ok()) {
                    let _ = tx.send(Ok(port));
                    sent = true;
                }
            }
        }
        if !sent {
            let _ = tx.send(Err(log));
        }
    });
    let port = match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(Ok(port)) => port,
        Ok(Err(log)) => panic!("moto exited before it said where it listens: {log}"),
        Err(e) => panic!("moto did not say where it listens within a minute: {e}"),
    };
    let moto = Moto { child, port };
    // It is listening once it has said so; wait until it also answers.
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return moto;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("moto did not answer on 127.0.0.1:{port}");
}

/// One plain HTTP/1.1 request to the local server; returns the body. moto checks no signature, but
/// answers a request without `Authorization` as an anonymous one (refused for private objects).
pub(crate) fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).and_then(|_| s.write_all(body)).expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("http head") + 4;
    let status = String::from_utf8_lossy(&out[..split]).into_owned();
    assert!(status.starts_with("HTTP/1.1 2") || status.starts_with("HTTP/1.0 2"), "{method} {path}: {status}");
    assert!(!status.to_ascii_lowercase().contains("transfer-encoding: chunked"), "chunked answer not handled");
    out.split_off(split)
}

#[test]
fn s3_inputs_and_outputs_through_a_local_server() {
    let Some((f, moto)) = moto_job("petal/shard/s3_moto") else { return };
    let aws = [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", moto.port)),
        ("AWS_ALLOW_HTTP", "true".into()),
    ];
    let s3_predict = |out: &str, extra: &[(&str, String)]| {
        let mut env = aws.to_vec();
        env.extend_from_slice(extra);
        let mut c = predict(&f, "s3://petal/photos/", out, &env);
        c.arg("--staging").arg(f.dir.join("staging"));
        c
    };
    ok(s3_predict("s3://petal/out/single.csv", &[]).output().expect("single"), "s3 single");
    run_all((0..2).map(|k| s3_predict("s3://petal/out/sharded.csv", &kubernetes_env(k, 2)).spawn().expect("spawn")).collect());
    let mut m = petal();
    m.args(["merge", "s3://petal/out/sharded.csv"]).envs(aws.iter().map(|(k, v)| (*k, v.as_str())));
    ok(m.output().expect("merge"), "s3 merge");
    let single = http(moto.port, "GET", "/petal/out/single.csv", b"");
    assert_eq!(http(moto.port, "GET", "/petal/out/sharded.csv", b""), single, "merged S3 shards differ from one process");
    assert!(!http(moto.port, "GET", "/petal/out/sharded.csv.parts/part-00001-of-00002.manifest.json", b"").is_empty());

    // The same images read from disk give the same predictions (only the path column differs),
    // and a file:// output is a local file.
    let local = f.dir.join("local.csv");
    ok(predict(&f, &f.images.to_string_lossy(), &format!("file://{}", local.display()), &[]).output().expect("local"), "file:// predict");
    let prefix = format!("{}/", f.images.display());
    let local = String::from_utf8(read(&local)).expect("utf8").replace(&prefix, "s3://petal/photos/");
    assert_eq!(local, String::from_utf8(single).expect("utf8"));
}

/// The fixture and moto with its photos, for the S3 check `check` (recorded as run), or `None`
/// with the skip recorded when no Python has moto.
pub(crate) fn moto_job(check: &str) -> Option<(Fixture, Moto)> {
    let Some(py) = moto_python() else {
        testkit::skip(check, "no Python with moto[server] (pip install 'moto[server]', or set PETAL_MOTO_PYTHON)");
        return None;
    };
    testkit::ran(check);
    let f = fixture();
    let moto = moto_with_photos(&py, &f.images);
    Some((f, moto))
}

/// moto with a bucket `petal` holding the files under `images` at `photos/<path relative to images>`.
fn moto_with_photos(py: &Path, images: &Path) -> Moto {
    let moto = start_moto(py);
    http(moto.port, "PUT", "/petal", b"");
    for p in common::files_under(images) {
        let rel = p.strip_prefix(images).expect("under").to_string_lossy().replace('\\', "/");
        http(moto.port, "PUT", &format!("/petal/photos/{rel}"), &read(&p));
    }
    moto
}

/// The value after `key` on the line of `text` that holds it (up to a space, quote or `%`).
fn value_after(text: &str, key: &str) -> String {
    let line = text.lines().find(|l| l.contains(key)).unwrap_or_else(|| panic!("no {key}"));
    let rest = &line[line.find(key).expect("key") + key.len()..];
    rest.trim_start_matches([' ', '"']).chars().take_while(|c| !matches!(c, ' ' | '"' | '%' | '}')).collect()
}

#[test]
fn deploy_files_give_the_environment_the_tests_use() {
    let root = testkit::workspace_root();
    let job = std::fs::read_to_string(root.join("deploy/kubernetes/predict-job.yaml")).expect("job");
    assert!(job.contains("completionMode: Indexed"), "the predict Job must be an Indexed Job (JOB_COMPLETION_INDEX)");
    let completions = value_after(&job, "completions:");
    let shards_line = job.lines().skip_while(|l| !l.contains("name: PETAL_SHARDS")).nth(1).expect("PETAL_SHARDS value");
    assert_eq!(value_after(shards_line, "value:"), completions, "PETAL_SHARDS must equal completions");
    for script in ["predict-array.sbatch", "extract-array.sbatch"] {
        let sbatch = std::fs::read_to_string(root.join("deploy/slurm").join(script)).expect("sbatch");
        let array = value_after(&sbatch, "#SBATCH --array=");
        let (lo, hi) = array.split_once('-').expect("a range");
        assert_eq!(lo, "0", "{script}: with PETAL_SHARDS set, task IDs are shard indices from 0");
        let shards: u32 = value_after(&sbatch, "PETAL_SHARDS=${PETAL_SHARDS:-").parse().expect("number");
        assert_eq!(hi.parse::<u32>().expect("number") + 1, shards, "{script}: the array must have PETAL_SHARDS tasks");
        assert!(!sbatch.contains("--shard "), "{script}: the script must take its shard from Slurm's environment");
    }
}

// ---- Sharded feature extraction (`petal train --extract-only` under the same engines) ----

/// `petal train --extract-only` of the config `cfg` on `data` with caches in `<work>/cache`, with
/// `env` as the engine's variables.
fn extract(data: &Path, cfg: &Path, work: &Path, env: &[(&str, String)]) -> Command {
    let mut c = common::train_cmd(data, Some(cfg), work);
    ENGINE_VARS.iter().for_each(|v| {
        c.env_remove(v);
    });
    c.arg("--extract-only");
    c.envs(env.iter().map(|(k, v)| (*k, v.as_str()))).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// The cache files (not parts, chunks or image caches) of `dir`, by name.
fn caches(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| (n.starts_with("features-") && n.ends_with(".safetensors")) || (n.starts_with("activations-") && n.ends_with(".pact")))
        .collect();
    names.sort();
    names
}

/// Every cache of `single` is in `merged`, value for value: the same key, and the same feature
/// rows and labels in the same order (feature caches: the tensors; activation caches, which hold
/// no time stamp: the bytes).
fn assert_same_caches(single: &Path, merged: &Path) {
    let names = caches(single);
    assert!(!names.is_empty(), "the single process wrote no cache in {}", single.display());
    assert_eq!(caches(merged), names, "the merge did not write the caches one process writes");
    for n in &names {
        if n.ends_with(".pact") {
            assert!(read(&single.join(n)) == read(&merged.join(n)), "{n}: merged activation cache differs from one process's");
            continue;
        }
        let (a, b) = (checkpoint::load(&single.join(n)).expect("single cache"), checkpoint::load(&merged.join(n)).expect("merged cache"));
        assert_eq!(a.meta.provenance, b.meta.provenance, "{n}: keys differ");
        for t in ["features", "labels"] {
            let (x, y) = (&a.tensors[t], &b.tensors[t]);
            assert_eq!((x.dtype, &x.shape), (y.dtype, &y.shape), "{n}: {t} shapes differ");
            assert!(x.bytes == y.bytes, "{n}: merged {t} differ from one process's");
        }
    }
}

/// A plain `petal train` on the merged caches in `<work>/cache`: it must find them (features 0.0s).
fn train_reuses(data: &Path, cfg: &Path, work: &Path) {
    let out = common::train_cmd(data, Some(cfg), work).output().expect("train");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "train on merged caches failed: {err}");
    assert!(err.contains("(features 0.0s)"), "train recomputed the merged caches:\n{err}");
}

#[test]
fn sharded_feature_extraction_merges_into_one_process_cache() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, data) = (tmp.path(), tmp.path().join("data"));
    make_dataset(&data, 6, 9, 0);
    // Frozen, two augmented views (read from the decoded-image cache) and the validation split.
    let cfg = config(dir, "fx", &[("epochs", "1")]);
    ok(extract(&data, &cfg, &dir.join("single"), &[]).output().expect("single"), "single-process extraction");
    let (work, sharded) = (dir.join("sharded"), dir.join("sharded/cache"));
    // Kubernetes Indexed Job, completions 3: pods 0 and 2 run at once, pod 1 never does.
    run_all([0, 2].map(|k| extract(&data, &cfg, &work, &kubernetes_env(k, 3)).spawn().expect("spawn")).into());
    let err = String::from_utf8_lossy(&merge(&sharded.to_string_lossy()).stderr).into_owned();
    assert!(err.contains("shard 1/3: missing"), "{err}");
    assert!(caches(&sharded).is_empty(), "a failed merge wrote a cache");
    // The printed command reruns shard 1 alone.
    let rerun = err.lines().skip_while(|l| !l.contains("shard 1/3")).nth(1).expect("rerun command line").trim().to_string();
    assert!(rerun.contains("--extract-only") && rerun.ends_with("--shard 1/3"), "{rerun}");
    let mut sh = Command::new("sh");
    ENGINE_VARS.iter().for_each(|v| {
        sh.env_remove(v);
    });
    ok(sh.arg("-c").arg(&rerun).output().expect("sh"), &rerun);
    ok(merge(&sharded.to_string_lossy()), "merge");
    assert_same_caches(&dir.join("single/cache"), &sharded);
    // Each shard had images of each cache; a finished shard run again keeps its parts.
    let again = extract(&data, &cfg, &work, &kubernetes_env(0, 3)).output().expect("rerun");
    assert!(String::from_utf8_lossy(&again.stderr).matches("kept from an earlier run").count() == 3, "{}", String::from_utf8_lossy(&again.stderr));
    // Merging twice is harmless, and a plain train reuses the merged caches.
    ok(merge(&sharded.to_string_lossy()), "second merge");
    assert_same_caches(&dir.join("single/cache"), &sharded);
    train_reuses(&data, &cfg, &work);
    // A shard without --extract-only, and a shard that would skip images, are refused.
    let refused = |extra: &[&str], extract_only: bool| {
        let mut c =
            if extract_only { extract(&data, &cfg, &dir.join("refused"), &[]) } else { common::train_cmd(&data, Some(&cfg), &dir.join("refused")) };
        let out = c.args(extra).output().expect("run");
        assert!(!out.status.success(), "{extra:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(refused(&["--shard", "0/2"], false).contains("add --extract-only"));
    assert!(refused(&["--shard", "0/2", "--skip-bad"], true).contains("cannot skip unreadable images"));
}

#[test]
fn sharded_activation_cache_merges_into_one_process_cache() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, data) = (tmp.path(), tmp.path().join("data"));
    make_dataset(&data, 6, 9, 0);
    // Partial mode: a random EfficientNet-Lite0 on 32-pixel crops whose last block trains on cached
    // activations (f16), one augmented view; chunks of 12 images in batches of 6.
    let cfg = dir.join("pact.toml");
    let text = "name = \"pact\"\narch = \"efficientnet_lite0\"\nmode = \"partial\"\nunfreeze_blocks = 1\nviews = 1\nepochs = 1\n\
                batch_size = 8\nseed = 5\nimage_size = 32\nresize_size = 36\nchannels_last = false\neval_batch_size = 6\n\
                chunk_images = 12\nthreads = 1\nactivation_dtype = \"f16\"\n[head]\nhidden = []\ndropout = 0.0\n";
    std::fs::write(&cfg, text).expect("config");
    ok(extract(&data, &cfg, &dir.join("single"), &[]).output().expect("single"), "single-process extraction");
    // Slurm array --array=1-2 (IDs from 1): both tasks at once.
    let (work, sharded) = (dir.join("sharded"), dir.join("sharded/cache"));
    run_all((1..=2).map(|id| extract(&data, &cfg, &work, &slurm_env(id, 1, 2)).spawn().expect("spawn")).collect());
    ok(merge(&sharded.to_string_lossy()), "merge");
    assert_same_caches(&dir.join("single/cache"), &sharded);
    train_reuses(&data, &cfg, &work);
    // A damaged part is named with the command that reruns its shard; the merged caches stay.
    let parts = std::fs::read_dir(&sharded).expect("list").map(|e| e.expect("entry").path()).find(|p| p.to_string_lossy().ends_with(".pact.parts"));
    let part = parts.expect("a parts folder").join("part-00001-of-00002.pact");
    let mut bytes = read(&part);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&part, bytes).expect("damage");
    let err = String::from_utf8_lossy(&merge(&sharded.to_string_lossy()).stderr).into_owned();
    assert!(err.contains("shard 1/2: damaged") && err.contains("--extract-only --shard 1/2"), "{err}");
    assert_same_caches(&dir.join("single/cache"), &sharded);
}
