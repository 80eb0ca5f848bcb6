//! `cargo xtask fetch-data` and `cargo xtask pipeline`: the Oxford 102 flowers from the official site
//! (md5-verified, resumable), and the whole job in one command.

use crate::download::{self, Expect};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use xtask_launch::arg_value;

/// Arguments of `fetch-data`.
#[derive(clap::Args, Debug)]
pub struct FetchDataArgs {
    /// Destination folder (default: data/oxford102 in the repository).
    #[arg(long)]
    pub dest: Option<PathBuf>,
}

/// The official files and their md5 sums (from the dataset page).
const FILES: [(&str, &str); 3] = [
    ("102flowers.tgz", "52808999861908f626f3c1f4e79d11fa"),
    ("imagelabels.mat", "e0620be6f572b9609742df49c70aed4d"),
    ("setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c"),
];

fn base_url() -> String {
    std::env::var("PETAL_FLOWERS_URL").unwrap_or_else(|_| "https://www.robots.ox.ac.uk/~vgg/data/flowers/102".to_string())
}

/// Default data folder.
pub fn default_dest() -> PathBuf {
    crate::repo_root().join("data").join("oxford102")
}

/// Downloads and unpacks the dataset into `dest` (Oxford layout: jpg/, imagelabels.mat, setid.mat).
pub fn fetch_into(dest: &Path) -> Result<()> {
    fetch_from(dest, &base_url(), &FILES)
}

/// [`fetch_into`] from a given server with a given file table (tests use a local server).
pub fn fetch_from(dest: &Path, base: &str, files: &[(&str, &str)]) -> Result<()> {
    if dest.join("jpg").is_dir() && dest.join("imagelabels.mat").is_file() && dest.join("setid.mat").is_file() {
        eprintln!("fetch-data: {} is complete; nothing to download", dest.display());
        return Ok(());
    }
    for &(name, md5) in files {
        let url = format!("{}/{name}", base.trim_end_matches('/'));
        download::fetch(&url, &dest.join(name), &Expect::Md5(md5.to_string()), name).map_err(|e| {
            e.context(
                "could not fetch the Oxford 102 flowers; if you are offline, point the pipeline at a local copy with --data <folder> \
                 (an ImageFolder with train/ valid/ [test/] class folders, or the official jpg/ + imagelabels.mat + setid.mat)",
            )
        })?;
    }
    let tgz = dest.join("102flowers.tgz");
    let tmp = dest.join(".jpg.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| download::write_error(&tmp, e))?;
    }
    eprintln!("fetch-data: unpacking {}", tgz.display());
    let file = std::fs::File::open(&tgz).with_context(|| format!("could not open {}", tgz.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive.unpack(&tmp).map_err(|e| {
        if download::is_disk_full(&e) {
            download::write_error(&tmp, e)
        } else {
            anyhow::anyhow!("{} is not a valid gzip tar archive: {e}", tgz.display())
        }
    })?;
    let jpg = tmp.join("jpg");
    if !jpg.is_dir() {
        bail!("{} has no jpg/ folder", tgz.display());
    }
    std::fs::rename(&jpg, dest.join("jpg")).map_err(|e| download::write_error(dest, e))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// `cargo xtask fetch-data`.
pub fn run(args: &FetchDataArgs) -> Result<PathBuf> {
    let dest = args.dest.clone().unwrap_or_else(default_dest);
    fetch_into(&dest)?;
    Ok(dest)
}

/// What a pipeline config file names, read generically (xtask does not link the pipeline crate).
#[derive(Debug, Default, PartialEq)]
pub struct ConfigNames {
    /// `data`, if set.
    pub data: Option<String>,
    /// `weights`, if set.
    pub weights: Option<String>,
    /// `train.arch` when it is a built-in name or an ensemble of them (as `a+b`; `Some(None)`: a
    /// custom architecture, no pretrained weights).
    pub arch: Option<Option<String>>,
}

/// Reads `data`, `weights` and `train.arch` from a pipeline config file.
pub fn config_names(path: &Path) -> Result<ConfigNames> {
    let text = std::fs::read_to_string(path).with_context(|| format!("could not read the pipeline config {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", path.display()))?;
    let string = |v: Option<&toml::Value>| v.and_then(toml::Value::as_str).map(str::to_string);
    Ok(ConfigNames {
        data: string(table.get("data")),
        weights: string(table.get("weights")),
        arch: table.get("train").and_then(|t| t.get("arch")).map(arch_name),
    })
}

/// `train.arch` of a config as the command line writes it: a name, or an ensemble's
/// (`{ ensemble = ["a", { rescaled = { arch = "a", size = 224 } }] }`) as `a+a@224`; `None` for a
/// custom DenseNet.
fn arch_name(v: &toml::Value) -> Option<String> {
    if let Some(name) = v.as_str() {
        return Some(name.to_string());
    }
    let member = |m: &toml::Value| match m.get("rescaled") {
        Some(r) => Some(format!("{}@{}", r.get("arch")?.as_str()?, r.get("size")?.as_integer()?)),
        None => m.as_str().map(str::to_string),
    };
    let members = v.get("ensemble")?.as_array()?;
    members.iter().map(member).collect::<Option<Vec<_>>>().map(|m| m.join("+"))
}

/// What `cargo xtask pipeline` has to fetch for these arguments: the dataset (when neither
/// `--data` nor the config's `data` names one) and the weights of an architecture (when neither
/// `--weights` nor the config's `weights` names a file; the architecture is `--arch`, else the
/// config's `train.arch`, else the default recipe's densenet121; none for a custom architecture).
pub fn to_fetch(args: &[OsString]) -> Result<(bool, Option<String>)> {
    let file = match arg_value(args, "--config") {
        Some(p) => config_names(&crate::repo_root().join(p))?,
        None => ConfigNames::default(),
    };
    let data = arg_value(args, "--data").is_none() && file.data.is_none();
    let weights = if arg_value(args, "--weights").is_none() && file.weights.is_none() {
        match (arg_value(args, "--arch"), file.arch) {
            (Some(a), _) => Some(a),
            (None, Some(a)) => a,
            (None, None) => Some("densenet121".to_string()),
        }
    } else {
        None
    };
    Ok((data, weights))
}

/// The data folder and weights that the arguments or the config name must exist (see
/// [`xtask_launch::check_named_paths`]; the launcher made the same check before xtask was built).
pub fn check_named_paths(args: &[OsString]) -> Result<()> {
    xtask_launch::check_named_paths(&crate::repo_root(), args).map_err(anyhow::Error::msg)
}

/// `cargo xtask pipeline`: fetches what is missing (see [`to_fetch`]), then runs `petal pipeline`
/// with the same arguments (flags override the config file there).
pub fn pipeline(mut args: Vec<OsString>) -> Result<()> {
    let wants_help = args.iter().any(|a| a == "--help" || a == "-h");
    if !wants_help {
        check_named_paths(&args)?;
        // Build before any download, so that a failed build is reported as itself.
        crate::setup::petal_binary()?;
        let (data, weights) = to_fetch(&args)?;
        if data {
            let dest = default_dest();
            fetch_into(&dest)?;
            args.push("--data".into());
            args.push(dest.into_os_string());
        }
        if let Some(arch) = weights {
            match crate::weights::ensure_any(&arch, false) {
                Ok(path) => {
                    args.push("--weights".into());
                    args.push(path.into_os_string());
                }
                Err(e) => bail!(
                    "{e:#}\nwithout pretrained weights the pipeline cannot start; pass --weights <file> (or set `weights` in the config) to use a local copy"
                ),
            }
        }
    }
    let mut all: Vec<OsString> = vec!["pipeline".into()];
    all.extend(args);
    crate::run_petal(all)
}
