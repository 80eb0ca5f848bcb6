//! Committed fixtures are frozen: every file under `crates/*/tests/fixtures` (docs `*.md` and the
//! generator scripts `*.py` aside)
//! has its sha256 in that directory's `SHA256SUMS` (`sha256sum -c SHA256SUMS` format), so a
//! regenerated or edited fixture fails here, and so does a new one nobody listed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "__pycache__") {
                continue;
            }
            files_under(root, &path, out);
        } else if path.file_name().is_some_and(|n| n != "SHA256SUMS") && path.extension().is_none_or(|e| e != "md" && e != "py") {
            out.push(path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/"));
        }
    }
}

fn fixture_dirs() -> Vec<PathBuf> {
    let crates = testkit::workspace_root().join("crates");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&crates).expect("crates/").map(|e| e.expect("entry").path().join("tests/fixtures")).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

#[test]
fn every_fixture_matches_its_pinned_sha256() {
    let dirs = fixture_dirs();
    assert!(dirs.len() >= 3, "checkpoint, model and preprocess have fixtures: {dirs:?}");
    let mut problems = Vec::new();
    let mut checked = 0;
    for dir in &dirs {
        let sums = dir.join("SHA256SUMS");
        let text = std::fs::read_to_string(&sums).unwrap_or_else(|e| panic!("{}: {e} (every fixture directory pins its files)", sums.display()));
        let pinned: BTreeMap<String, String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (hash, name) = l.split_once("  ").unwrap_or_else(|| panic!("{}: bad line {l:?}", sums.display()));
                (name.to_string(), hash.to_string())
            })
            .collect();
        let mut present = Vec::new();
        files_under(dir, dir, &mut present);
        for name in &present {
            let actual = testkit::sha256_file(&dir.join(name));
            match pinned.get(name) {
                None => problems.push(format!("{}: new fixture {name} is not pinned; add the line `{actual}  {name}`", sums.display())),
                Some(want) if *want != actual => problems.push(format!(
                    "{}/{name} changed (sha256 {actual}, pinned {want}): fixtures are frozen; add a new one instead of rewriting",
                    dir.display()
                )),
                Some(_) => checked += 1,
            }
        }
        for name in pinned.keys().filter(|n| !present.contains(n)) {
            problems.push(format!("{}: pinned fixture {name} is missing", dir.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 50, "only {checked} fixtures checked");
}

/// The restored first v1.0 format file is exactly the one commit dc8873e wrote.
#[test]
fn original_v1_0_format_fixture_is_the_first_written() {
    let f = testkit::workspace_root().join("crates/checkpoint/tests/fixtures/format/v1.0/sample.petal");
    assert_eq!(testkit::sha256_file(&f), "037b8f4c418fe1776050ff96c84ffa28aaf5a62908372c32a666f60612084b3e");
}

#[test]
fn check_lists_parse_ids_and_ignore_comments() {
    let ids = testkit::parse_check_list("# header\n\nmodel/a  # why\n  checkpoint/b\n#x/y\n");
    assert_eq!(ids, ["model/a", "checkpoint/b"]);
    // The committed list parses and names checks of crates that exist.
    let required = testkit::required_checks();
    assert!(required.len() >= 4, "{required:?}");
    for id in &required {
        let krate = id.split('/').next().unwrap_or_default();
        let root = testkit::workspace_root();
        let exists = krate == "petal" || root.join("crates").join(krate).is_dir() || (krate == "xtask" && root.join("xtask").is_dir());
        assert!(exists, "{id}: no crate {krate}");
    }
}
