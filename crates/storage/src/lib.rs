//! Where batch jobs read their inputs and write their outputs: a local path, a `file://` URL, or an
//! object-storage URL `s3://bucket/prefix` (through the `object_store` crate).
//!
//! S3 credentials and settings come from the standard environment variables that
//! `object_store::aws::AmazonS3Builder::from_env` reads: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`/`AWS_REGION`, an
//! S3-compatible endpoint in `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`), and `AWS_ALLOW_HTTP=true` for
//! a plain-HTTP endpoint. Requests are path-style unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
//!
//! **Faults.** Every request is retried by `object_store` on the faults worth retrying (5xx
//! answers, S3's `SlowDown`, connections reset or timed out, a body cut off mid-stream) with
//! exponential backoff; a write is one PUT, so a failed or retried write never leaves a partial
//! object. The limits, with their defaults (`object_store`'s own), are read from the environment
//! when a client is made ([`RetrySettings::from_env`]):
//!
//! | variable | default | what |
//! |---|---|---|
//! | `PETAL_S3_MAX_RETRIES` | 10 | retries of one request (0: none) |
//! | `PETAL_S3_RETRY_TIMEOUT_S` | 180 | no retry starts later than this after the first attempt |
//! | `PETAL_S3_BACKOFF_INITIAL_MS` | 100 | the first wait; each next one is up to twice as long |
//! | `PETAL_S3_BACKOFF_MAX_MS` | 15000 | the longest wait |
//! | `AWS_TIMEOUT` (`object_store`'s) | 30s | one attempt, answer included (e.g. `5s`) |
//! | `AWS_CONNECT_TIMEOUT` (`object_store`'s) | 5s | opening a connection |
//!
//! When the retries run out, the error names the object and `object_store`'s last cause (the
//! HTTP status, or the connection error).
//!
//! The API is blocking (the async client runs on a private single-threaded runtime), so callers
//! stay ordinary synchronous code. A write is atomic either way: a local file is replaced by
//! rename ([`petal_common::write_atomic`]); an object PUT becomes visible whole or not at all.
//!
//! **Invariant:** knows nothing of images, models or predictions; it moves bytes.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

/// What can go wrong reaching a location.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not a path or a supported URL.
    #[error("{url}: {detail}")]
    Url {
        /// The text given.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A local file or folder cannot be read or written.
    #[error(transparent)]
    Io(#[from] petal_common::IoError),
    /// The object store refused or failed a request (credentials, endpoint, missing object...).
    #[error("{url}: {action}: {source}")]
    Remote {
        /// The object or prefix.
        url: String,
        /// What was being done.
        action: &'static str,
        /// The client's error.
        #[source]
        source: object_store::Error,
    },
    /// The object or file does not exist.
    #[error("{0}: not found")]
    NotFound(String),
}

/// How hard a client retries a failing request (see the crate docs for the variables).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySettings {
    /// Retries of one request.
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout: std::time::Duration,
    /// The first wait.
    pub backoff_initial: std::time::Duration,
    /// The longest wait.
    pub backoff_max: std::time::Duration,
}

impl Default for RetrySettings {
    /// `object_store`'s defaults.
    fn default() -> Self {
        let d = object_store::RetryConfig::default();
        RetrySettings {
            max_retries: d.max_retries,
            retry_timeout: d.retry_timeout,
            backoff_initial: d.backoff.init_backoff,
            backoff_max: d.backoff.max_backoff,
        }
    }
}

impl RetrySettings {
    /// The defaults with the `PETAL_S3_*` variables `var` gives applied (an empty one counts as
    /// unset); a variable that is set but not a number is an error naming it.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<RetrySettings, Error> {
        let mut s = RetrySettings::default();
        let num = |name: &str| -> Result<Option<f64>, Error> {
            match var(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .map(Some)
                    .ok_or_else(|| Error::Url { url: name.to_string(), detail: format!("{v:?} is not a non-negative number") }),
            }
        };
        if let Some(n) = num("PETAL_S3_MAX_RETRIES")? {
            s.max_retries = n as usize;
        }
        if let Some(x) = num("PETAL_S3_RETRY_TIMEOUT_S")? {
            s.retry_timeout = std::time::Duration::from_secs_f64(x);
        }
        if let Some(x) = num("PETAL_S3_BACKOFF_INITIAL_MS")? {
            s.backoff_initial = std::time::Duration::from_secs_f64(x / 1e3);
        }
        if let Some(x) = num("PETAL_S3_BACKOFF_MAX_MS")? {
            s.backoff_max = std::time::Duration::from_secs_f64(x / 1e3);
        }
        Ok(s)
    }

    /// [`RetrySettings::from_vars`] of the process environment.
    pub fn from_env() -> Result<RetrySettings, Error> {
        RetrySettings::from_vars(|k| std::env::var(k).ok())
    }

    fn config(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig { init_backoff: self.backoff_initial, max_backoff: self.backoff_max, base: 2.0 },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }
}

/// A file or object (or a folder/prefix of them).
#[derive(Clone)]
pub enum Location {
    /// A local path (also what a `file://` URL becomes).
    Local(PathBuf),
    /// An object (or prefix) in a bucket.
    Remote(Remote),
}

/// An object-storage location: the bucket's client and the key (or prefix) in it.
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    /// `scheme://bucket`, without a trailing `/`.
    base: String,
    key: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Remote(r) => write!(f, "{}/{}", r.base, r.key),
        }
    }
}

/// Runs `fut` on the private runtime of the object-storage client.
fn block_on<T>(url: &str, fut: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let rt = RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string()));
    match rt {
        Ok(rt) => rt.block_on(fut),
        Err(e) => Err(Error::Url { url: url.to_string(), detail: format!("cannot start the object-storage client: {e}") }),
    }
}

/// Whether `text` names object storage (`s3://…`) rather than a local path or `file://` URL.
pub fn is_remote(text: &str) -> bool {
    text.starts_with("s3://")
}

impl Location {
    /// Parses a local path, a `file://` URL or an `s3://bucket/key` URL.
    pub fn parse(text: &str) -> Result<Location, Error> {
        let bad = |detail: &str| Error::Url { url: text.to_string(), detail: detail.to_string() };
        if let Some(rest) = text.strip_prefix("file://") {
            let url = url::Url::parse(text).map_err(|e| bad(&format!("not a file URL ({e})")))?;
            let path = url.to_file_path().map_err(|_| bad("not an absolute local path"))?;
            let trailing = rest.ends_with('/');
            return Ok(Location::Local(if trailing { path.join("") } else { path }));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name"));
            }
            let retry = RetrySettings::from_env()?;
            let builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry.config());
            let store = builder.build().map_err(|e| Error::Remote { url: text.to_string(), action: "configuring the S3 client", source: e })?;
            return Ok(Location::Remote(Remote { store: Arc::new(store), base: format!("s3://{bucket}"), key: key.to_string() }));
        }
        if text.contains("://") {
            return Err(bad("unsupported URL scheme (use a path, file:// or s3://)"));
        }
        Ok(Location::Local(PathBuf::from(text)))
    }

    /// The location `name` below this one (`name` uses `/` between components).
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(name.split('/').fold(p.clone(), |acc, c| acc.join(c))),
            Location::Remote(r) => {
                let key = if r.key.is_empty() || r.key.ends_with('/') { format!("{}{name}", r.key) } else { format!("{}/{name}", r.key) };
                Location::Remote(Remote { key, ..r.clone() })
            }
        }
    }

    /// This location with `suffix` appended to its last component (`out.csv` → `out.csv.parts`).
    pub fn with_suffix(&self, suffix: &str) -> Location {
        match self {
            Location::Local(p) => {
                let mut s = p.clone().into_os_string();
                s.push(suffix);
                Location::Local(PathBuf::from(s))
            }
            Location::Remote(r) => Location::Remote(Remote { key: format!("{}{suffix}", r.key.trim_end_matches('/')), ..r.clone() }),
        }
    }

    /// The last component of the path or key.
    pub fn file_name(&self) -> String {
        match self {
            Location::Local(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            Location::Remote(r) => r.key.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string(),
        }
    }

    /// The local path, for a local location.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::Remote(_) => None,
        }
    }

    /// The whole file or object.
    pub fn read(&self) -> Result<Vec<u8>, Error> {
        match self {
            Location::Local(p) => std::fs::read(p).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotFound(p.display().to_string()),
                _ => Error::Io(petal_common::IoError::new(p, "reading", e)),
            }),
            Location::Remote(r) => block_on(&r.key, async {
                let res = r.store.get(&ObjectPath::from(r.key.as_str())).await;
                let got = res.map_err(|e| r.error("reading", e))?;
                got.bytes().await.map(|b| b.to_vec()).map_err(|e| r.error("reading", e))
            }),
        }
    }

    /// Replaces the file or object with `bytes`, atomically (a local parent folder is created).
    pub fn write_atomic(&self, bytes: &[u8]) -> Result<(), Error> {
        match self {
            Location::Local(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| petal_common::IoError::new(dir, "creating the folder", e))?;
                }
                Ok(petal_common::write_atomic(p, bytes)?)
            }
            Location::Remote(r) => block_on(&r.key, async {
                let payload = object_store::PutPayload::from(bytes.to_vec());
                r.store.put(&ObjectPath::from(r.key.as_str()), payload).await.map(|_| ()).map_err(|e| r.error("writing", e))
            }),
        }
    }

    /// Every file below this folder or prefix (recursively), as (path relative to it with `/`
    /// separators, location), sorted by relative path component by component (the order of
    /// sorted local paths). An empty list when nothing is there.
    pub fn list(&self) -> Result<Vec<(String, Location)>, Error> {
        let mut out = match self {
            Location::Local(p) => list_local(p)?,
            Location::Remote(r) => {
                let prefix = r.key.trim_end_matches('/');
                let metas: Vec<object_store::ObjectMeta> = block_on(&r.key, async {
                    let pfx = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
                    r.store.list(pfx.as_ref()).try_collect().await.map_err(|e| r.error("listing", e))
                })?;
                metas
                    .into_iter()
                    .filter_map(|m| {
                        let key = m.location.to_string();
                        let rel = if prefix.is_empty() { key.as_str() } else { key.strip_prefix(prefix)?.strip_prefix('/')? };
                        Some((rel.to_string(), Location::Remote(Remote { key: key.clone(), ..r.clone() })))
                    })
                    .collect()
            }
        };
        out.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
        Ok(out)
    }

    /// Whether this location is a local folder or a prefix with objects under it.
    pub fn is_dir(&self) -> Result<bool, Error> {
        match self {
            Location::Local(p) => Ok(p.is_dir()),
            Location::Remote(_) => Ok(!self.list()?.is_empty()),
        }
    }
}

impl Remote {
    fn error(&self, action: &'static str, source: object_store::Error) -> Error {
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound(format!("{}/{}", self.base, self.key)),
            source => Error::Remote { url: format!("{}/{}", self.base, self.key), action, source },
        }
    }
}

fn list_local(root: &Path) -> Result<Vec<(String, Location)>, Error> {
    let io = |p: &Path, e| Error::Io(petal_common::IoError::new(p, "listing", e));
    let mut out = Vec::new();
    if !root.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let path = e.map_err(|e| io(&d, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((petal_common::shard::relative_path(&path, root), Location::Local(path)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod retry_tests {
    use super::RetrySettings;
    use std::time::Duration;

    #[test]
    fn retry_settings_default_to_object_stores_and_read_their_variables() {
        let none = RetrySettings::from_vars(|_| None).expect("defaults");
        assert_eq!((none.max_retries, none.retry_timeout), (10, Duration::from_secs(180)));
        assert_eq!((none.backoff_initial, none.backoff_max), (Duration::from_millis(100), Duration::from_secs(15)));
        let vars = |k: &str| match k {
            "PETAL_S3_MAX_RETRIES" => Some("3".to_string()),
            "PETAL_S3_RETRY_TIMEOUT_S" => Some("7.5".to_string()),
            "PETAL_S3_BACKOFF_INITIAL_MS" => Some("20".to_string()),
            "PETAL_S3_BACKOFF_MAX_MS" => Some(" ".to_string()),
            _ => None,
        };
        let set = RetrySettings::from_vars(vars).expect("set");
        assert_eq!((set.max_retries, set.retry_timeout, set.backoff_initial), (3, Duration::from_millis(7500), Duration::from_millis(20)));
        assert_eq!(set.backoff_max, none.backoff_max, "an empty variable counts as unset");
        let bad = RetrySettings::from_vars(|k| (k == "PETAL_S3_MAX_RETRIES").then(|| "many".to_string())).expect_err("not a number");
        assert!(bad.to_string().contains("PETAL_S3_MAX_RETRIES") && bad.to_string().contains("many"), "{bad}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_urls() {
        assert!(matches!(Location::parse("out/p.csv").expect("path"), Location::Local(p) if p == Path::new("out/p.csv")));
        assert!(matches!(Location::parse("file:///tmp/a%20b/p.csv").expect("file"), Location::Local(p) if p == Path::new("/tmp/a b/p.csv")));
        let e = Location::parse("gs://bucket/x").expect_err("scheme").to_string();
        assert!(e.contains("gs://bucket/x") && e.contains("scheme"), "{e}");
        let e = Location::parse("s3:///x").expect_err("no bucket").to_string();
        assert!(e.contains("bucket"), "{e}");
        let r = Location::parse("s3://b/pre/fix").expect("s3");
        assert_eq!(r.join("a/b.jpg").to_string(), "s3://b/pre/fix/a/b.jpg");
        assert_eq!(r.with_suffix(".parts").to_string(), "s3://b/pre/fix.parts");
        assert_eq!(r.file_name(), "fix");
    }

    #[test]
    fn local_round_trip_and_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Location::Local(dir.path().join("root"));
        root.join("b/x.txt").write_atomic(b"one").expect("write");
        root.join("a.txt").write_atomic(b"two").expect("write");
        root.join("a/z.txt").write_atomic(b"three").expect("write");
        assert_eq!(root.join("b/x.txt").read().expect("read"), b"one");
        let names: Vec<String> = root.list().expect("list").into_iter().map(|(r, _)| r).collect();
        assert_eq!(names, ["a/z.txt", "a.txt", "b/x.txt"]);
        assert!(matches!(root.join("absent").read(), Err(Error::NotFound(_))));
        assert!(root.join("nothing-here").list().expect("empty").is_empty());
    }
}
