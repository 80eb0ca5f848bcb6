//! Resolving files through PyPI's simple JSON index (PEP 691), with no pip and no Python.

use anyhow::{bail, Context, Result};

/// The index base URL; `PETAL_PYPI_INDEX` overrides it (tests point it at a local server, users at a mirror).
pub fn index_url() -> String {
    std::env::var("PETAL_PYPI_INDEX").unwrap_or_else(|_| "https://pypi.org/simple".to_string())
}

/// One distribution file listed by the index.
#[derive(Debug, Clone)]
pub struct DistFile {
    /// The file name, e.g. `torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl`.
    pub filename: String,
    /// Where to download it.
    pub url: String,
    /// Its sha256 as the index publishes it.
    pub sha256: String,
}

/// Lists the files of `project`.
pub fn files(index: &str, project: &str) -> Result<Vec<DistFile>> {
    let url = format!("{}/{}/", index.trim_end_matches('/'), project);
    let doc = crate::download::get_json(&url, "application/vnd.pypi.simple.v1+json")?;
    let list = doc["files"].as_array().with_context(|| format!("{url} has no \"files\" list (not a PEP 691 index?)"))?;
    let mut out = Vec::new();
    for f in list {
        let (Some(filename), Some(file_url)) = (f["filename"].as_str(), f["url"].as_str()) else { continue };
        let Some(sha256) = f["hashes"]["sha256"].as_str() else { continue };
        if f["yanked"].as_bool() == Some(true) {
            continue;
        }
        // Relative URLs are resolved against the index page.
        let file_url = if file_url.starts_with("http://") || file_url.starts_with("https://") {
            file_url.to_string()
        } else {
            let origin_end = url.find("://").map(|i| i + 3).and_then(|s| url[s..].find('/').map(|j| s + j)).unwrap_or(url.len());
            if file_url.starts_with('/') {
                format!("{}{}", &url[..origin_end], file_url)
            } else {
                format!("{url}{file_url}")
            }
        };
        out.push(DistFile { filename: filename.to_string(), url: file_url, sha256: sha256.to_string() });
    }
    Ok(out)
}

/// Picks the one file of `project` whose name starts with `prefix` and contains every `parts` entry.
pub fn pick(index: &str, project: &str, prefix: &str, parts: &[&str]) -> Result<DistFile> {
    let all = files(index, project)?;
    let found = all.into_iter().find(|f| f.filename.starts_with(prefix) && parts.iter().all(|p| f.filename.contains(p)));
    match found {
        Some(f) => Ok(f),
        None => bail!("PyPI lists no file of {project} named {prefix}*{} for this platform", parts.join("*")),
    }
}
