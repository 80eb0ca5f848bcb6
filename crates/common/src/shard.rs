//! Sharding of embarrassingly parallel work (batch prediction, feature extraction) over many
//! processes or machines, and the shard each process takes when a batch engine started it.
//!
//! A [`Shard`] `K/N` (0 ≤ K < N) owns the inputs whose **relative path** hashes to `K`:
//! [`shard_of`] is the first 8 bytes of the SHA-256 of the path's UTF-8 bytes, read as a
//! big-endian `u64`, modulo `N`. The relative path is taken from the input root (the folder or
//! object-storage prefix given on the command line), with `/` between components on every
//! platform, so the same image lands in the same shard on Linux, macOS and Windows, whether the
//! data sits on a local disk or in a bucket, and a retry or rerun of shard `K` covers exactly the
//! images it covered before. [`select`] is the one function every sharded computation calls.
//!
//! [`Shard::from_env`] reads the index a batch engine gives each task:
//! * Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX` (0-based); the total is not in the
//!   environment, so it comes from the caller (a flag) or from `PETAL_SHARDS`;
//! * Slurm job arrays: `SLURM_ARRAY_TASK_ID` minus `SLURM_ARRAY_TASK_MIN` (arrays may start at
//!   1), of `SLURM_ARRAY_TASK_COUNT`; the array must be contiguous (no step, no gaps). When the
//!   number of shards is given (flag or `PETAL_SHARDS`), the task ID itself is the shard index,
//!   so resubmitting a single task (`sbatch --array=3`) reruns shard 3.

use std::fmt;
use std::str::FromStr;

/// Environment variable with the number of shards, for engines that do not export it.
pub const SHARDS_ENV: &str = "PETAL_SHARDS";

/// One shard of `count`: this process handles the inputs with [`shard_of`]`(rel, count) == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// 0-based index of this shard.
    pub index: u32,
    /// Number of shards (≥ 1).
    pub count: u32,
}

/// Why a shard cannot be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// A `K/N` text that is not two numbers with 0 ≤ K < N.
    #[error("shard {text:?}: {detail} (expected K/N with 0 <= K < N, e.g. 0/4)")]
    Syntax {
        /// The text given.
        text: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An environment variable of a batch engine that cannot be used.
    #[error("environment variable {var}={value:?}: {detail}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl Shard {
    /// Shard `index` of `count`, checked.
    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        if count == 0 || index >= count {
            return Err(ShardError::Syntax { text: format!("{index}/{count}"), detail: "the index must be below the count".into() });
        }
        Ok(Shard { index, count })
    }

    /// Whether this shard owns the input at `rel` (its path relative to the input root).
    pub fn owns(&self, rel: &str) -> bool {
        shard_of(rel, self.count) == self.index
    }

    /// The shard a batch engine assigned to this process, from `env` (a lookup such as
    /// `|k| std::env::var(k).ok()`), or `None` when no engine variable is set. The number of
    /// shards is `count` (a `--shards` flag), else `PETAL_SHARDS`; a Kubernetes index needs one of
    /// them. Under Slurm with a shard count, the task ID is the shard index (so `--array=3` reruns
    /// shard 3 alone); without one, the array is the job: ID − MIN of COUNT.
    pub fn from_env(env: impl Fn(&str) -> Option<String>, count: Option<u32>) -> Result<Option<Shard>, ShardError> {
        let num = |var: &'static str, value: String| -> Result<u32, ShardError> {
            value.trim().parse::<u32>().map_err(|e| ShardError::Env { var, value: value.clone(), detail: format!("not a number ({e})") })
        };
        let total_given = match count {
            Some(c) => Some(c),
            None => env(SHARDS_ENV).map(|v| num(SHARDS_ENV, v)).transpose()?,
        };
        if let Some(id) = env("SLURM_ARRAY_TASK_ID") {
            let id = num("SLURM_ARRAY_TASK_ID", id)?;
            if let Some(total) = total_given {
                // The array's task IDs are the shard indices: a rerun of one task (`--array=3`) keeps its shard.
                return Shard::new(id, total).map(Some).map_err(|_| ShardError::Env {
                    var: "SLURM_ARRAY_TASK_ID",
                    value: id.to_string(),
                    detail: format!(
                        "is not below the {total} shards asked for (with a shard count, task IDs are shard indices: --array=0-{})",
                        total - 1
                    ),
                });
            }
            let min = env("SLURM_ARRAY_TASK_MIN").map(|v| num("SLURM_ARRAY_TASK_MIN", v)).transpose()?.unwrap_or(0);
            let total = env("SLURM_ARRAY_TASK_COUNT").map(|v| num("SLURM_ARRAY_TASK_COUNT", v)).transpose()?.ok_or_else(|| ShardError::Env {
                var: "SLURM_ARRAY_TASK_COUNT",
                value: String::new(),
                detail: format!("is not set; pass the number of shards or set {SHARDS_ENV}"),
            })?;
            let index = id.checked_sub(min).filter(|&i| i < total).ok_or_else(|| ShardError::Env {
                var: "SLURM_ARRAY_TASK_ID",
                value: id.to_string(),
                detail: format!("is not in {min}..{} (the array must be contiguous, e.g. --array=0-{})", min + total, total.saturating_sub(1)),
            })?;
            return Ok(Some(Shard { index, count: total }));
        }
        if let Some(idx) = env("JOB_COMPLETION_INDEX") {
            let index = num("JOB_COMPLETION_INDEX", idx)?;
            let total = total_given.ok_or_else(|| ShardError::Env {
                var: "JOB_COMPLETION_INDEX",
                value: index.to_string(),
                detail: format!("is set but the number of shards is not: pass it or set {SHARDS_ENV} (= the Job's completions)"),
            })?;
            let shard = Shard::new(index, total).map_err(|_| ShardError::Env {
                var: "JOB_COMPLETION_INDEX",
                value: index.to_string(),
                detail: format!("is not below {total} shards"),
            })?;
            return Ok(Some(shard));
        }
        Ok(None)
    }

    /// File-name form, `part-KKKKK-of-NNNNN`, which sorts by index.
    pub fn part_name(&self) -> String {
        format!("part-{:05}-of-{:05}", self.index, self.count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |detail: &str| ShardError::Syntax { text: s.to_string(), detail: detail.to_string() };
        let (k, n) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let k: u32 = k.trim().parse().map_err(|_| bad("K is not a number"))?;
        let n: u32 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        if n == 0 || k >= n {
            return Err(bad("K must be below N"));
        }
        Ok(Shard { index: k, count: n })
    }
}

/// The shard (of `count`) that owns the input at relative path `rel`: the first 8 bytes of
/// SHA-256(`rel` as UTF-8), big-endian, modulo `count`. `rel` uses `/` between components.
pub fn shard_of(rel: &str, count: u32) -> u32 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(rel.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(head) % u64::from(count.max(1))) as u32
}

/// The positions in `items` (kept in order) that `shard` owns, `rel` giving each item's path
/// relative to its input root; every position when `shard` is `None`.
pub fn select<T>(items: &[T], shard: Option<Shard>, rel: impl Fn(&T) -> String) -> Vec<usize> {
    (0..items.len()).filter(|&i| shard.is_none_or(|s| s.owns(&rel(&items[i])))).collect()
}

/// `path` relative to `root` with `/` separators (lossy UTF-8), or the file name when `path` is
/// not under `root` (a file given by itself is its own root).
pub fn relative_path(path: &std::path::Path, root: &std::path::Path) -> String {
    let rel = path.strip_prefix(root).ok().filter(|r| !r.as_os_str().is_empty());
    let rel = rel.or_else(|| path.file_name().map(std::path::Path::new)).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!("2/5".parse::<Shard>(), Ok(Shard { index: 2, count: 5 }));
        assert_eq!(Shard { index: 2, count: 5 }.to_string(), "2/5");
        for bad in ["5/5", "1/0", "a/3", "3", "-1/4"] {
            let e = bad.parse::<Shard>().expect_err(bad).to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn hash_is_the_documented_function() {
        // `printf 'train/1/image_06734.jpg' | sha256sum` starts 78f9ea4b4bee1667; that u64 modulo
        // 2, 3, 7 and 1000 (computed with Python's int arithmetic) is 1, 0, 6 and 951.
        let rel = "train/1/image_06734.jpg";
        assert_eq!([2, 3, 7, 1000].map(|n| shard_of(rel, n)), [1, 0, 6, 951]);
        assert_eq!(shard_of(rel, 1), 0);
    }

    #[test]
    fn select_partitions_exactly() {
        let items: Vec<String> = (0..1000).map(|i| format!("c{}/img{i}.jpg", i % 7)).collect();
        let mut seen = vec![0; items.len()];
        for k in 0..4 {
            let part = select(&items, Some(Shard { index: k, count: 4 }), |s| s.clone());
            assert!(part.len() > 200 && part.len() < 300, "shard {k}: {} items, the hash is not spreading", part.len());
            assert!(part.windows(2).all(|w| w[0] < w[1]));
            part.iter().for_each(|&i| seen[i] += 1);
        }
        assert!(seen.iter().all(|&c| c == 1));
        assert_eq!(select(&items, None, |s| s.clone()).len(), 1000);
    }

    #[test]
    fn relative_paths_use_slashes() {
        use std::path::Path;
        assert_eq!(relative_path(Path::new("/data/flowers/train/1/a.jpg"), Path::new("/data/flowers")), "train/1/a.jpg");
        assert_eq!(relative_path(Path::new("/data/x.jpg"), Path::new("/data/x.jpg")), "x.jpg");
    }

    #[test]
    fn kubernetes_environment() {
        let s = Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "3"), (SHARDS_ENV, "4")]), None).expect("ok");
        assert_eq!(s, Some(Shard { index: 3, count: 4 }));
        assert_eq!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "1")]), Some(2)).expect("ok"), Some(Shard { index: 1, count: 2 }));
        let e = Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "1")]), None).expect_err("no total").to_string();
        assert!(e.contains(SHARDS_ENV), "{e}");
        let e = Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "4"), (SHARDS_ENV, "4")]), None).expect_err("too big").to_string();
        assert!(e.contains("JOB_COMPLETION_INDEX"), "{e}");
        assert_eq!(Shard::from_env(env(&[]), Some(4)).expect("ok"), None);
    }

    #[test]
    fn slurm_environment() {
        let vars = [("SLURM_ARRAY_TASK_ID", "4"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_COUNT", "4")];
        assert_eq!(Shard::from_env(env(&vars), None).expect("ok"), Some(Shard { index: 3, count: 4 }));
        let vars = [("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_COUNT", "2")];
        assert_eq!(Shard::from_env(env(&vars), None).expect("ok"), Some(Shard { index: 0, count: 2 }));
        // A single task resubmitted (`--array=3`: MIN 3, COUNT 1) keeps its shard when the count is given.
        let rerun = [("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_MIN", "3"), ("SLURM_ARRAY_TASK_COUNT", "1"), (SHARDS_ENV, "8")];
        assert_eq!(Shard::from_env(env(&rerun), None).expect("ok"), Some(Shard { index: 3, count: 8 }));
        assert_eq!(Shard::from_env(env(&rerun[..3]), Some(8)).expect("ok"), Some(Shard { index: 3, count: 8 }));
        let e = Shard::from_env(env(&rerun[..3]), Some(3)).expect_err("id too big").to_string();
        assert!(e.contains("--array=0-2"), "{e}");
        let vars = [("SLURM_ARRAY_TASK_ID", "8"), ("SLURM_ARRAY_TASK_MIN", "0"), ("SLURM_ARRAY_TASK_COUNT", "3")];
        let e = Shard::from_env(env(&vars), None).expect_err("stepped array").to_string();
        assert!(e.contains("contiguous"), "{e}");
        // One past the last task of the array (ID − MIN = COUNT) is outside it too, and the message
        // says which range was expected.
        let vars = [("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_COUNT", "4")];
        let e = Shard::from_env(env(&vars), None).expect_err("past the end").to_string();
        assert!(e.contains("is not in 1..5") && e.contains("--array=0-3"), "{e}");
        let e = Shard::from_env(env(&[("SLURM_ARRAY_TASK_ID", "x")]), None).expect_err("nan").to_string();
        assert!(e.contains("SLURM_ARRAY_TASK_ID"), "{e}");
    }
}
