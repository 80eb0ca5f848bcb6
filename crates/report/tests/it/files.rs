//! CSV quoting and atomic replacement.

use report::Error;

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn csv_quotes_only_fields_that_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    let rows = vec![
        vec!["1".to_string(), "0.5".to_string(), "plain".to_string()],
        vec!["2".to_string(), "a,b".to_string(), "say \"hi\"".to_string()],
        vec!["3".to_string(), "two\nlines".to_string(), " padded".to_string()],
        vec!["4".to_string(), String::new(), "cr\rhere".to_string()],
    ];
    report::write_csv(&path, &["epoch", "value", "note"], &rows).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let expected = "epoch,value,note\n\
                    1,0.5,plain\n\
                    2,\"a,b\",\"say \"\"hi\"\"\"\n\
                    3,\"two\nlines\",\" padded\"\n\
                    4,,\"cr\rhere\"\n";
    assert_eq!(text, expected);
}

#[test]
fn csv_rejects_ragged_rows_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    std::fs::write(&path, "old\n").unwrap();
    let err = report::write_csv(&path, &["a", "b"], &[vec!["1".into(), "2".into()], vec!["3".into()]]).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));
    assert!(err.to_string().contains("row 2") && err.to_string().contains("t.csv"), "{err}");
    assert!(matches!(report::write_csv(&path, &[], &[]), Err(Error::Empty { .. })));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
    assert_eq!(names_in(dir.path()), ["t.csv"]);
}

#[test]
fn atomic_write_replaces_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("figure.png");
    std::fs::write(&path, vec![7u8; 10_000]).unwrap();
    report::write_atomic(&path, b"new content").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new content");
    report::write_atomic(&path, b"").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"");
    assert_eq!(names_in(dir.path()), ["figure.png"], "temp files left behind");
}

#[test]
fn atomic_write_failure_names_the_path_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    // Target is an existing directory: the rename fails, the temp file must be removed.
    let target = dir.path().join("occupied");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("inside"), b"x").unwrap();
    let err = report::write_atomic(&target, b"data").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("occupied"), "{err}");
    assert_eq!(names_in(dir.path()), ["occupied"]);
    assert_eq!(names_in(&target), ["inside"]);

    // Missing parent directory.
    let missing = dir.path().join("no/such/dir/f.csv");
    let err = report::write_atomic(&missing, b"data").unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("f.csv"), "{err}");
}
