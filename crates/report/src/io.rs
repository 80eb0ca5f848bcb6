//! Atomic file replacement (from `petal_common`) and CSV writing.

use crate::Error;
use std::path::Path;

/// Writes `bytes` to `path` atomically: the bytes go to a hidden temp file in the same
/// directory, which is fsynced and then renamed over `path` (the directory is fsynced too where
/// the platform allows). Readers see either the previous file or the complete new one; on
/// error the temp file is removed and `path` is left as it was. The parent directory must exist.
/// (The one implementation is [`petal_common::write_atomic`].)
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    petal_common::write_atomic(path, bytes).map_err(Error::from)
}

/// Appends one CSV field, quoted (RFC 4180) when it holds a comma, a double quote, a line
/// break, or leading/trailing spaces; inner double quotes are doubled.
fn push_field(out: &mut String, field: &str) {
    let needs_quotes = field.contains([',', '"', '\n', '\r']) || field.starts_with(' ') || field.ends_with(' ');
    if needs_quotes {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

/// Writes a CSV file atomically (see [`write_atomic`]): the header line, then one line per row,
/// fields separated by commas, lines ended by `\n`, fields quoted (RFC 4180) where needed.
/// Every row must have as many fields as the header; an empty header is an error.
pub fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<(), Error> {
    write_atomic(path, csv_text(path, header, rows)?.as_bytes())
}

/// The text [`write_csv`] writes, without writing it (for outputs that go elsewhere than a local
/// file, or in parts); `path` names the destination in errors.
pub fn csv_text(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<String, Error> {
    if header.is_empty() {
        return Err(Error::empty(path, "the CSV header has no columns"));
    }
    let mut out = String::new();
    let mut line = |fields: &mut dyn Iterator<Item = &str>| {
        for (i, f) in fields.enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_field(&mut out, f);
        }
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for (i, row) in rows.iter().enumerate() {
        if row.len() != header.len() {
            return Err(Error::invalid(path, format!("CSV row {} has {} fields, the header has {}", i + 1, row.len(), header.len())));
        }
        line(&mut row.iter().map(String::as_str));
    }
    Ok(out)
}
