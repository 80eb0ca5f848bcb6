//! The shard manifests and parts `petal merge` reads (`petal_common::parts::check_parts`, then
//! `merge_records`): the input is split at `\n--part--\n` into shard count, manifests and parts.
//! Merging must return the merged bytes, the shards to rerun, or why the parts are not one job's:
//! never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use petal_common::parts;

const SEP: &[u8] = b"\n--part--\n";

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEP.len()).position(|w| w == SEP) {
        out.push(&rest[..i]);
        rest = &rest[i + SEP.len()..];
    }
    out.push(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let pieces = split(data);
    let shards = pieces.first().and_then(|p| p.first()).map_or(1, |b| u32::from(b % 4) + 1);
    let mut manifests = Vec::new();
    let mut contents = Vec::new();
    for (k, pair) in pieces[1..].chunks(2).enumerate().take(shards as usize) {
        let name = format!("part-{k:05}-of-{shards:05}.manifest.json");
        manifests.push((name, Ok(pair[0].to_vec())));
        contents.push(pair.get(1).map(|b| b.to_vec()).unwrap_or_default());
    }
    let read = |m: &parts::Manifest| {
        let k = m.shard.index as usize;
        contents.get(k).cloned().ok_or_else(|| format!("no part {k}"))
    };
    if let Ok(found) = parts::check_parts("fuzz", manifests, read) {
        let _ = parts::merge_records(&found);
    }
});
