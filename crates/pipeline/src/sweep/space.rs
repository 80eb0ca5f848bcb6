//! The search space: one dimension per training-config field, named by its TOML key (dotted for a
//! nested field, e.g. `head.dropout`), so any field of [`TrainConfig`] — today's or one added later
//! — can be searched without code here knowing it.

use std::path::Path;

use preprocess::rng::Rng;
use train::TrainConfig;

use crate::Error;

/// How the values of one dimension are drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Dimension {
    /// One of these values (grid: each of them).
    Choice(Vec<toml::Value>),
    /// A float uniform in `[lo, hi]`.
    Uniform(f64, f64),
    /// A float whose logarithm is uniform in `[ln lo, ln hi]` (lo > 0).
    LogUniform(f64, f64),
    /// An integer uniform in `lo..=hi`.
    IntUniform(i64, i64),
}

/// The parsed `[space]` table: `(key, dimension)` in key order.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    /// The dimensions, sorted by key.
    pub dims: Vec<(String, Dimension)>,
}

fn pair(v: &toml::Value) -> Option<(f64, f64)> {
    let a = v.as_array().filter(|a| a.len() == 2)?;
    let num = |x: &toml::Value| x.as_float().or_else(|| x.as_integer().map(|i| i as f64));
    Some((num(&a[0])?, num(&a[1])?))
}

impl Dimension {
    /// Parses one `[space]` entry: a list of values, or a table with one of `uniform = [lo, hi]`,
    /// `log_uniform = [lo, hi]`, `int_uniform = [lo, hi]`, `choice = [...]`.
    fn parse(key: &str, v: &toml::Value, path: &Path) -> Result<Dimension, Error> {
        let bad = |what: &str| Error::config(path, format!("space.{key}: {what}"));
        let dim = match v {
            toml::Value::Array(values) => Dimension::Choice(values.clone()),
            toml::Value::Table(t) if t.len() == 1 => {
                let (kind, range) = t.iter().next().ok_or_else(|| bad("empty table"))?;
                match kind.as_str() {
                    "choice" => Dimension::Choice(range.as_array().cloned().ok_or_else(|| bad("choice needs a list"))?),
                    "uniform" | "log_uniform" | "int_uniform" => {
                        let (lo, hi) = pair(range).ok_or_else(|| bad(&format!("{kind} needs [lo, hi]")))?;
                        if !(lo <= hi && lo.is_finite() && hi.is_finite()) || (kind == "log_uniform" && lo <= 0.0) {
                            return Err(bad(&format!("{kind} = [{lo}, {hi}] is not a valid range")));
                        }
                        match kind.as_str() {
                            "uniform" => Dimension::Uniform(lo, hi),
                            "log_uniform" => Dimension::LogUniform(lo, hi),
                            _ => Dimension::IntUniform(lo.round() as i64, hi.round() as i64),
                        }
                    }
                    other => return Err(bad(&format!("unknown distribution {other:?} (choice, uniform, log_uniform, int_uniform)"))),
                }
            }
            _ => return Err(bad("expected a list of values or a table like { log_uniform = [1e-4, 1e-2] }")),
        };
        if matches!(&dim, Dimension::Choice(v) if v.is_empty()) {
            return Err(bad("no values"));
        }
        Ok(dim)
    }

    /// A value drawn with `rng`.
    fn sample(&self, rng: &mut Rng) -> toml::Value {
        match self {
            Dimension::Choice(values) => values[rng.below(values.len() as u64) as usize].clone(),
            Dimension::Uniform(lo, hi) => toml::Value::Float(round_sig(rng.uniform(*lo, *hi))),
            Dimension::LogUniform(lo, hi) => toml::Value::Float(round_sig(rng.uniform(lo.ln(), hi.ln()).exp())),
            Dimension::IntUniform(lo, hi) => toml::Value::Integer(lo + rng.below((hi - lo + 1) as u64) as i64),
        }
    }
}

/// `x` rounded to 3 significant digits (readable configs; the search loses nothing that matters).
fn round_sig(x: f64) -> f64 {
    format!("{x:.2e}").parse().unwrap_or(x)
}

impl Space {
    /// Parses the `[space]` table of the sweep file `path`.
    pub fn parse(table: &toml::Table, path: &Path) -> Result<Space, Error> {
        if table.is_empty() {
            return Err(Error::config(path, "`[space]` is empty: name at least one training field to search, e.g. lr = [1e-3, 3e-3]"));
        }
        let mut dims = table.iter().map(|(k, v)| Ok((k.clone(), Dimension::parse(k, v, path)?))).collect::<Result<Vec<_>, Error>>()?;
        dims.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Space { dims })
    }

    /// Every combination of the dimensions' values (the first key varies slowest). Errors when a
    /// dimension is not a list of values.
    pub fn grid(&self, path: &Path) -> Result<Vec<toml::Table>, Error> {
        let mut out = vec![toml::Table::new()];
        for (key, dim) in &self.dims {
            let Dimension::Choice(values) = dim else {
                return Err(Error::config(path, format!("space.{key}: grid search needs a list of values, not a distribution")));
            };
            out = out.into_iter().flat_map(|t| values.iter().map(move |v| with(&t, key, v))).collect();
        }
        Ok(out)
    }

    /// `n` random points; point `i` depends only on (`seed`, `i`, the space), so adding trials
    /// keeps the earlier ones.
    pub fn random(&self, n: usize, seed: u64) -> Vec<toml::Table> {
        (0..n)
            .map(|i| {
                let mut t = toml::Table::new();
                for (d, (key, dim)) in self.dims.iter().enumerate() {
                    let mut rng = Rng::keyed(seed, i as u64, d as u64, 0x5eef);
                    t.insert(key.clone(), dim.sample(&mut rng));
                }
                t
            })
            .collect()
    }
}

fn with(t: &toml::Table, key: &str, v: &toml::Value) -> toml::Table {
    let mut t = t.clone();
    t.insert(key.to_string(), v.clone());
    t
}

/// `base` with every `(dotted key, value)` of `point` set; the result must be a valid training
/// config (an unknown key or a wrong type is an error naming it).
pub fn apply_point(base: &TrainConfig, point: &toml::Table, path: &Path) -> Result<TrainConfig, Error> {
    let mut table = toml::Table::try_from(base).map_err(|e| Error::config(path, format!("the base config cannot be serialised: {e}")))?;
    for (key, value) in point {
        set_dotted(&mut table, key, value.clone()).map_err(|e| Error::config(path, format!("space.{key}: {e}")))?;
    }
    let cfg: TrainConfig = table.try_into().map_err(|e| Error::config(path, format!("a point of the space is not a valid training config: {e}")))?;
    cfg.validate().map_err(|e| Error::config(path, format!("the point {} is not a valid training config: {e}", render(point))))?;
    Ok(cfg)
}

fn set_dotted(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    match key.split_once('.') {
        None => {
            table.insert(key.to_string(), value);
            Ok(())
        }
        Some((head, rest)) => match table.get_mut(head) {
            Some(toml::Value::Table(inner)) => set_dotted(inner, rest, value),
            Some(_) => Err(format!("`{head}` is not a table")),
            None => Err(format!("`{head}` is not a field of the training config")),
        },
    }
}

/// `key = value, …` of a point, for messages and tables.
pub fn render(point: &toml::Table) -> String {
    point.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(text: &str) -> Space {
        Space::parse(&text.parse::<toml::Table>().expect("toml"), Path::new("s.toml")).expect("space")
    }

    #[test]
    fn grid_is_the_product_and_random_is_keyed_by_seed_and_index() {
        let s = space("lr = [0.001, 0.01]\n\"head.dropout\" = [0.0, 0.2, 0.5]\n");
        let g = s.grid(Path::new("s.toml")).expect("grid");
        assert_eq!(g.len(), 6);
        let cfg = apply_point(&TrainConfig::default(), &g[5], Path::new("s.toml")).expect("apply");
        assert_eq!((cfg.recipe.head.dropout, cfg.recipe.lr), (0.5, 0.01));
        let r = space("lr = { log_uniform = [1e-4, 1e-2] }\nepochs = { int_uniform = [5, 9] }\n");
        let (a, b) = (r.random(20, 7), r.random(30, 7));
        assert_eq!(a[..], b[..20]);
        assert_ne!(r.random(20, 8), a);
        for p in &a {
            let lr = p["lr"].as_float().expect("float");
            let e = p["epochs"].as_integer().expect("int");
            assert!((1e-4..=1e-2).contains(&lr) && (5..=9).contains(&e), "{p:?}");
        }
        assert!(r.grid(Path::new("s.toml")).is_err(), "a distribution has no grid");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let s = space("lrr = [0.1]\n");
        let err = apply_point(&TrainConfig::default(), &s.grid(Path::new("s.toml")).expect("grid")[0], Path::new("s.toml")).expect_err("typo");
        assert!(err.to_string().contains("lrr"), "{err}");
        let s = space("label_smoothing = [1.5]\n");
        let err = apply_point(&TrainConfig::default(), &s.grid(Path::new("s.toml")).expect("grid")[0], Path::new("s.toml")).expect_err("range");
        assert!(err.to_string().contains("label_smoothing"), "{err}");
        let t: toml::Table = "lr = { log_uniform = [0.0, 1.0] }".parse().expect("toml");
        assert!(Space::parse(&t, Path::new("s.toml")).is_err());
    }
}
