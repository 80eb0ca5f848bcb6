//! `cargo xtask lint`: the gates every change passes before the tests (CI runs it first).
//!
//! Checks, all run even when an earlier one fails, then one summary saying what to fix:
//! 1. `cargo fmt --all --check` (rustfmt.toml);
//! 2. tidy: `BENCHMARKS.md` is the rendering of `bench/record.json` (skipped, with a note, while
//!    there is no record), every library crate (`crates/*/src/lib.rs`) declares
//!    `#![warn(missing_docs)]` or `#![deny(missing_docs)]`, every snippet of README.md and the
//!    guides under `docs/` equals the example region it mirrors, and `deploy/Containerfile` builds
//!    with the "Container image" section's commands;
//! 3. `cargo clippy --workspace --all-targets -- -D warnings` (missing docs included: they are
//!    rustc warnings);
//! 4. `cargo doc --workspace --no-deps` with `RUSTDOCFLAGS=-D warnings` (broken doc links,
//!    missing docs).

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Arguments of `cargo xtask lint`.
#[derive(clap::Args, Debug)]
pub struct LintArgs {
    /// Rewrite what can be rewritten instead of reporting it: `cargo fmt --all` and the README snippets.
    #[arg(long)]
    pub fix: bool,
}

/// One failed check and what to do about it.
struct Failure {
    check: &'static str,
    fix: String,
}

/// `cargo xtask lint`.
pub fn run(args: &LintArgs) -> Result<()> {
    let root = crate::repo_root();
    let mut failures = Vec::new();

    eprintln!("lint: rustfmt");
    let mut cmd = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(&root).args(["fmt", "--all"]);
    if !args.fix {
        cmd.arg("--check");
    }
    if crate::run_status(cmd, "cargo fmt").is_err() {
        failures.push(Failure { check: "rustfmt", fix: "run `cargo fmt --all` (or `cargo xtask lint --fix`); the diff is above".into() });
    }

    eprintln!("lint: tidy (BENCHMARKS.md, missing_docs on every library crate, README snippets, Containerfile commands)");
    match benchmarks_page(&root) {
        Some(problems) => failures.extend(problems.into_iter().map(|fix| Failure { check: "tidy", fix })),
        None => eprintln!("lint: no {} yet, so {} is not checked against it", crate::bench::RECORD, crate::bench::PAGE),
    }
    for problem in missing_docs_attributes(&root)? {
        failures.push(Failure { check: "tidy", fix: problem });
    }
    for problem in readme_snippets(&root, args.fix)? {
        failures.push(Failure { check: "tidy", fix: problem });
    }
    for problem in container_commands(&root)? {
        failures.push(Failure { check: "tidy", fix: problem });
    }
    for problem in hand_made_skips(&root)? {
        failures.push(Failure { check: "tidy", fix: problem });
    }

    eprintln!("lint: clippy");
    let mut cmd = crate::cargo()?;
    // --keep-going: every crate's findings in one run, not only the first failing crate's.
    cmd.args(["clippy", "--workspace", "--all-targets", "--keep-going", "--", "-D", "warnings"]);
    if crate::run_status(cmd, "cargo clippy").is_err() {
        failures.push(Failure {
            check: "clippy",
            fix: "fix each `error:` above (`cargo clippy --workspace --all-targets --keep-going -- -D warnings` to rerun); \
                  `missing documentation for …` means a public item needs a `///` comment"
                .into(),
        });
    }

    eprintln!("lint: rustdoc");
    let mut cmd = crate::cargo()?;
    cmd.args(["doc", "--workspace", "--no-deps", "--keep-going", "--quiet"]).env("RUSTDOCFLAGS", "-D warnings");
    if crate::run_status(cmd, "cargo doc").is_err() {
        failures.push(Failure {
            check: "rustdoc",
            fix: "fix each `error:` above (broken `[links]` in doc comments, missing docs); \
                  rerun with `RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps`"
                .into(),
        });
    }

    if failures.is_empty() {
        eprintln!("lint: all clean");
        return Ok(());
    }
    eprintln!("\nlint: {} problem(s):", failures.len());
    for f in &failures {
        eprintln!("  [{}] {}", f.check, f.fix);
    }
    bail!("lint failed ({})", failures.iter().map(|f| f.check).collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", "))
}

/// `BENCHMARKS.md` must be the rendering of `bench/record.json` (`cargo xtask bench --write-md`
/// writes both); `None` when there is no record yet.
fn benchmarks_page(root: &Path) -> Option<Vec<String>> {
    let record = root.join(crate::bench::RECORD);
    if !record.exists() {
        return None;
    }
    let page = std::fs::read_to_string(root.join(crate::bench::PAGE)).ok();
    Some(page_problems(crate::bench::render_file(&record), page.as_deref()))
}

/// The problems of a committed `page` given the rendering of the record (or why it failed).
fn page_problems(rendered: Result<String>, page: Option<&str>) -> Vec<String> {
    let fix = "run `cargo xtask bench --write-md`";
    match rendered {
        Err(e) => vec![format!("{} cannot be rendered ({e:#}): {fix} to rewrite it from target/bench/latest.json", crate::bench::RECORD)],
        Ok(want) if page == Some(want.as_str()) => Vec::new(),
        Ok(_) => vec![format!("{} is not the rendering of {}: {fix}", crate::bench::PAGE, crate::bench::RECORD)],
    }
}

/// Tests that print their own skip (`eprintln!("SKIP ...")`) instead of recording it through
/// `testkit::skip`: such a test returns green without checking anything, and `cargo xtask test`
/// never hears of it. Every `.rs` file under `tests/` folders, `crates/testkit` aside.
fn hand_made_skips(root: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut stack = vec![root.join("tests"), root.join("crates"), root.join("xtask")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if p.is_dir() && name != "target" && name != "testkit" && !name.starts_with('.') {
                stack.push(p);
            } else if name.ends_with(".rs") && p.components().any(|c| c.as_os_str() == "tests") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut problems = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        problems.extend(skip_prints(&text).into_iter().map(|line| {
            format!(
                "{}:{line}: a test prints its own SKIP; call `testkit::skip(check, reason)` (or `testkit::Reference::find`) so the skip is recorded",
                rel(root, &f)
            )
        }));
    }
    Ok(problems)
}

/// 1-based lines of `src` that print a skip by hand.
fn skip_prints(src: &str) -> Vec<usize> {
    src.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            ["eprintln!(\"SKIP", "println!(\"SKIP", "eprint!(\"SKIP"].iter().any(|p| t.starts_with(p))
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// Library crates under `crates/` whose `lib.rs` does not turn the `missing_docs` lint on.
fn missing_docs_attributes(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let crates = root.join("crates");
    let mut dirs: Vec<_> = std::fs::read_dir(&crates)
        .with_context(|| format!("could not list {}", crates.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("src/lib.rs").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let lib = dir.join("src/lib.rs");
        let text = std::fs::read_to_string(&lib).with_context(|| format!("could not read {}", lib.display()))?;
        if !declares_missing_docs(&text) {
            problems.push(format!("{} lacks `#![warn(missing_docs)]`: add it after the crate's `//!` doc comment", rel(root, &lib)));
        }
    }
    Ok(problems)
}

fn declares_missing_docs(lib_rs: &str) -> bool {
    lib_rs.lines().map(|l| l.split_whitespace().collect::<String>()).any(|l| l == "#![warn(missing_docs)]" || l == "#![deny(missing_docs)]")
}

/// The marker before a README code block that mirrors part of a file.
const SNIPPET_MARKER: &str = "<!-- snippet: ";

/// The Markdown files whose snippets and sections the tidy checks read: README.md and every
/// `.md` file under `docs/` (the guides), in a fixed order.
fn doc_files(root: &Path) -> Result<Vec<std::path::PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
        for e in entries {
            let path = e.with_context(|| format!("could not list {}", dir.display()))?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|x| x == "md") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut docs = Vec::new();
    walk(&root.join("docs"), &mut docs)?;
    docs.sort();
    let mut files = vec![root.join("README.md")];
    files.extend(docs);
    Ok(files)
}

/// Checks (or, with `fix`, rewrites) every code block of README.md and the guides under `docs/`
/// announced by `<!-- snippet: PATH -->`: its content must equal the lines of PATH between
/// `// README:begin` and `// README:end`, minus their common indentation. So the snippets are code
/// that compiles (the examples are built by `cargo test` and clippy).
fn readme_snippets(root: &Path, fix: bool) -> Result<Vec<String>> {
    let mut all = Vec::new();
    for file in doc_files(root)? {
        let name = rel(root, &file);
        let text = std::fs::read_to_string(&file).with_context(|| format!("could not read {}", file.display()))?;
        let (fixed, problems) = check_snippets(&text, &name, |path| std::fs::read_to_string(root.join(path)).ok());
        // Rewrite only when every problem is a stale snippet (never around a malformed block).
        if fix && fixed != text && problems.iter().all(|p| p.contains("differs from")) {
            std::fs::write(&file, &fixed).with_context(|| format!("could not write {}", file.display()))?;
            eprintln!("lint: {name} snippets rewritten from the examples");
            continue;
        }
        all.extend(problems);
    }
    Ok(all)
}

/// Returns the README with every snippet replaced by its source region, and the problems found.
fn check_snippets(readme: &str, name: &str, read: impl Fn(&str) -> Option<String>) -> (String, Vec<String>) {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut problems = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        out.push(lines[i].to_string());
        let Some(path) = lines[i].trim().strip_prefix(SNIPPET_MARKER).and_then(|r| r.strip_suffix("-->")).map(str::trim) else {
            i += 1;
            continue;
        };
        let at = format!("{name} line {}", i + 1);
        i += 1;
        if !lines.get(i).is_some_and(|l| l.trim_start().starts_with("```")) {
            problems.push(format!("{at}: `{SNIPPET_MARKER}{path} -->` must be followed by a ``` code block"));
            continue;
        }
        out.push(lines[i].to_string());
        let Some(len) = lines[i + 1..].iter().position(|l| l.trim_start().starts_with("```")) else {
            problems.push(format!("{at}: the code block after it is not closed"));
            break;
        };
        let block = lines[i + 1..i + 1 + len].join("\n");
        match read(path).map(|src| region(&src)) {
            None => problems.push(format!("{at}: {path} does not exist")),
            Some(None) => problems.push(format!("{at}: {path} has no `// README:begin` … `// README:end` region")),
            Some(Some(want)) => {
                if want != block {
                    problems.push(format!(
                        "{at}: the snippet differs from {path} (its `// README:begin` … `// README:end` region); \
                         run `cargo xtask lint --fix` to copy the example into {name}"
                    ));
                }
                out.extend(want.lines().map(str::to_string));
                i += 1 + len;
                continue;
            }
        }
        out.extend(lines[i + 1..i + 1 + len].iter().map(|l| l.to_string()));
        i += 1 + len;
    }
    let mut fixed = out.join("\n");
    if readme.ends_with('\n') {
        fixed.push('\n');
    }
    (fixed, problems)
}

/// The lines between `// README:begin` and `// README:end`, without their common indentation.
fn region(src: &str) -> Option<String> {
    let lines: Vec<&str> = src.lines().collect();
    let begin = lines.iter().position(|l| l.trim() == "// README:begin")?;
    let len = lines[begin + 1..].iter().position(|l| l.trim() == "// README:end")?;
    let body = &lines[begin + 1..begin + 1 + len];
    let indent = body.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    Some(body.iter().map(|l| if l.trim().is_empty() { "" } else { &l[indent..] }).collect::<Vec<_>>().join("\n"))
}

/// `deploy/Containerfile`'s `RUN cargo …` lines must be the commands of the "Container image"
/// section (README.md or a guide under `docs/`), in the same order: the image is built the way the
/// documentation says.
fn container_commands(root: &Path) -> Result<Vec<String>> {
    let file = root.join("deploy/Containerfile");
    let containerfile = std::fs::read_to_string(&file).with_context(|| format!("could not read {}", file.display()))?;
    for doc in doc_files(root)? {
        let text = std::fs::read_to_string(&doc).with_context(|| format!("could not read {}", doc.display()))?;
        if let Some(section) = section(&text, "Container image") {
            return Ok(check_container_commands(&containerfile, &section, &rel(root, &doc)));
        }
    }
    Ok(vec!["no README.md or docs/ page has a \"Container image\" section: document the commands deploy/Containerfile builds with".into()])
}

/// The lines under the first heading containing `title`, up to the next heading of the same or a
/// higher level (`#` lines inside code blocks are not headings).
fn section(markdown: &str, title: &str) -> Option<String> {
    let mut in_code = false;
    let mut level = None;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        let heading = (!in_code && line.starts_with('#')).then(|| line.chars().take_while(|&c| c == '#').count());
        match (level, heading) {
            (None, Some(_)) if line.contains(title) => level = heading,
            (Some(l), Some(h)) if h <= l => break,
            (Some(_), _) => out.push(line),
            _ => {}
        }
    }
    level.map(|_| out.join("\n"))
}

fn check_container_commands(containerfile: &str, section: &str, doc: &str) -> Vec<String> {
    let built: Vec<&str> =
        containerfile.lines().filter_map(|l| l.trim().strip_prefix("RUN ")).map(str::trim).filter(|c| c.starts_with("cargo ")).collect();
    let documented: Vec<&str> = section.lines().map(str::trim).filter(|l| l.starts_with("cargo ")).collect();
    if built.is_empty() {
        return vec![format!("deploy/Containerfile runs no `cargo` command: its build stage must run {doc}'s \"Container image\" commands")];
    }
    if built != documented {
        return vec![format!(
            "deploy/Containerfile builds with {built:?} but {doc}'s \"Container image\" section documents {documented:?}: make them the same"
        )];
    }
    Vec::new()
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_skips_are_found_and_recorded_ones_are_not() {
        let src = "fn a() {\n    if x {\n        eprintln!(\"SKIP: no python\");\n        return;\n    }\n    testkit::skip(\"c/d/e\", \"why\");\n    println!(\"SKIPPED nothing\");\n}\n";
        assert_eq!(skip_prints(src), vec![3, 7]);
        assert!(skip_prints("testkit::skip(CHECK, \"absent\");\neprintln!(\"NOTE: sample absent\");").is_empty());
        // The repository itself has none.
        assert_eq!(hand_made_skips(&crate::repo_root()).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn benchmarks_page_must_be_the_records_rendering() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        assert_eq!(benchmarks_page(root), None, "no record yet: skipped");
        std::fs::create_dir(root.join("bench")).expect("mkdir");
        std::fs::write(root.join(crate::bench::RECORD), "{}\n").expect("write");
        let drifted = vec!["BENCHMARKS.md is not the rendering of bench/record.json: run `cargo xtask bench --write-md`".to_string()];
        assert_eq!(benchmarks_page(root), Some(drifted.clone()), "no page");
        let fresh = crate::bench::render(&serde_json::json!({})).expect("render");
        std::fs::write(root.join(crate::bench::PAGE), &fresh).expect("write");
        assert_eq!(benchmarks_page(root), Some(Vec::new()), "a fresh rendering passes");
        std::fs::write(root.join(crate::bench::PAGE), fresh.replace("× better", "x better")).expect("write");
        assert_eq!(benchmarks_page(root), Some(drifted), "an edited page fails");
        std::fs::write(root.join(crate::bench::RECORD), "{\"nosuch\": {}}").expect("write");
        let problems = benchmarks_page(root).expect("checked");
        assert!(problems.len() == 1 && problems[0].contains("cannot be rendered") && problems[0].contains("nosuch"), "{problems:?}");
    }

    #[test]
    fn this_repositorys_benchmarks_page_is_current() {
        let root = crate::repo_root();
        match benchmarks_page(&root) {
            Some(problems) => assert_eq!(problems, Vec::<String>::new()),
            // Before the first record, the page is the rendering of an empty one (no hand edits either).
            None => assert_eq!(
                std::fs::read_to_string(root.join(crate::bench::PAGE)).expect("BENCHMARKS.md"),
                crate::bench::render(&serde_json::json!({})).expect("render")
            ),
        }
    }

    #[test]
    fn missing_docs_attribute_is_recognised() {
        assert!(declares_missing_docs("//! Crate.\n\n#![warn(missing_docs)]\n\nmod a;\n"));
        assert!(declares_missing_docs("#![ deny( missing_docs ) ]"));
        assert!(!declares_missing_docs("//! Crate.\n#![warn(unused)]\n// #![warn(missing_docs)] is off\n"));
    }

    #[test]
    fn every_library_crate_of_this_repository_documents_its_items() {
        let problems = missing_docs_attributes(&crate::repo_root()).expect("list crates");
        assert!(problems.is_empty(), "{problems:?}");
    }

    const EXAMPLE: &str = "fn main() {\n    let x = 1;\n    // README:begin\n    let y = x + 1;\n    if y > 1 {\n        println!(\"{y}\");\n    }\n    // README:end\n}\n";

    #[test]
    fn container_build_commands_must_be_the_readmes() {
        let cf = "FROM x AS build\nRUN cargo xtask setup\nRUN cargo build --release --bin petal\nRUN cp a b\n";
        // The section ends at the next heading of its level, not at a `#` comment in a code block.
        let readme = "# p\n## Container image\n```sh\n# build\ncargo xtask setup\ncargo build --release --bin petal\n```\n### Run\ntext\n## Next\ncargo other\n";
        let s = section(readme, "Container image").expect("found");
        assert!(s.contains("### Run") && !s.contains("cargo other"), "{s}");
        assert!(check_container_commands(cf, &s, "README.md").is_empty());
        let drifted = s.replace("--release --bin petal", "--bin petal");
        let problems = check_container_commands(cf, &drifted, "docs/container.md");
        assert!(problems.len() == 1 && problems[0].contains("docs/container.md"), "{problems:?}");
        assert_eq!(check_container_commands("FROM x\n", &s, "README.md").len(), 1);
        // A guide whose title is the section: everything to the end.
        assert_eq!(section("# Container image\n\n```sh\ncargo a\n```\n", "Container image").as_deref(), Some("\n```sh\ncargo a\n```"));
        assert_eq!(section("# Other\n", "Container image"), None);
        let root = crate::repo_root();
        assert_eq!(container_commands(&root).expect("files"), Vec::<String>::new());
    }

    #[test]
    fn region_is_dedented() {
        assert_eq!(region(EXAMPLE).as_deref(), Some("let y = x + 1;\nif y > 1 {\n    println!(\"{y}\");\n}"));
        assert_eq!(region("fn main() {}\n"), None);
    }

    #[test]
    fn snippets_are_checked_and_fixed() {
        let read = |p: &str| (p == "ex.rs").then(|| EXAMPLE.to_string());
        let good = "# Use\n<!-- snippet: ex.rs -->\n```rust\nlet y = x + 1;\nif y > 1 {\n    println!(\"{y}\");\n}\n```\ntail\n";
        let (fixed, problems) = check_snippets(good, "docs/x.md", read);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(fixed, good);
        let stale = "# Use\n<!-- snippet: ex.rs -->\n```rust\nlet y = x;\n```\ntail\n";
        let (fixed, problems) = check_snippets(stale, "docs/x.md", read);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("docs/x.md line 2") && problems[0].contains("differs from ex.rs") && problems[0].contains("--fix"),
            "{problems:?}"
        );
        assert_eq!(fixed, good);
        let (_, problems) = check_snippets("<!-- snippet: gone.rs -->\n```rust\n```\n", "README.md", read);
        assert!(problems[0].contains("gone.rs does not exist"), "{problems:?}");
        let (_, problems) = check_snippets("<!-- snippet: ex.rs -->\ntext\n", "README.md", read);
        assert!(problems[0].contains("must be followed by"), "{problems:?}");
    }

    #[test]
    fn readme_snippets_of_this_repository_match_their_examples() {
        let root = crate::repo_root();
        let files = doc_files(&root).expect("list the guides");
        assert_eq!(files[0], root.join("README.md"));
        let problems = readme_snippets(&root, false).expect("read README");
        assert!(problems.is_empty(), "{problems:?}");
    }
}
