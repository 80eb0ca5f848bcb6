//! Pickled `torch.nn.Module` objects read as data: class name, plain-data attributes
//! (`in_features`, `out_features`, `p`, `dim`, `inplace`, ...) and children, in order. Nothing is
//! executed; the class name is only a string.

use serde::Serialize;
use std::collections::BTreeMap;

use crate::pickle::{Obj, Pickle, PyValue};

/// A pickled module: `torch.save(model.classifier)` or the `classifier` entry of a training
/// checkpoint, read without running any code.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PickledModule {
    /// Fully qualified class name, e.g. `torch.nn.modules.linear.Linear` or `__main__.Network`.
    pub class: String,
    /// Plain-data attributes of its `__dict__` (private `_*` entries and `training` left out).
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// Child modules (`_modules`), in registration order.
    pub children: Vec<(String, PickledModule)>,
}

impl PickledModule {
    /// The class name without its module path (`Linear`).
    pub fn short_class(&self) -> &str {
        self.class.rsplit('.').next().unwrap_or(&self.class)
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.attrs.get(name).and_then(serde_json::Value::as_i64)
    }

    /// A numeric attribute.
    pub fn float(&self, name: &str) -> Option<f64> {
        self.attrs.get(name).and_then(serde_json::Value::as_f64)
    }
}

impl std::fmt::Display for PickledModule {
    /// One line: `Sequential(fc1: Linear(1024→512), relu: ReLU, drop: Dropout(p=0.2), ...)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short_class())?;
        match (self.int("in_features"), self.int("out_features")) {
            (Some(i), Some(o)) => write!(f, "({i}→{o})")?,
            _ => {
                if let Some(p) = self.float("p") {
                    write!(f, "(p={p})")?;
                } else if let Some(d) = self.int("dim") {
                    write!(f, "(dim={d})")?;
                }
            }
        }
        if !self.children.is_empty() {
            f.write_str("(")?;
            for (i, (name, c)) in self.children.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{name}: {c}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Reads the module at `v`, if it is a pickled object whose state has `_modules` (an
/// `nn.Module`). `visits` bounds the walk (shared sub-objects, cycles).
pub(crate) fn read(pk: &Pickle, v: PyValue, depth: u32, visits: &mut u32) -> Option<PickledModule> {
    *visits += 1;
    if depth > 64 || *visits > 100_000 {
        return None;
    }
    let Some(Obj::Object { class, args, state: Some(state) }) = pk.obj(v) else {
        return None;
    };
    let d = pk.dict(*state)?;
    if !d.iter().any(|(k, _)| pk.str(*k) == Some("_modules")) {
        return None;
    }
    let class = real_class(pk, class, *args);
    let mut m = PickledModule { class, attrs: BTreeMap::new(), children: Vec::new() };
    for &(k, x) in d {
        let Some(name) = pk.str(k) else { continue };
        if name == "_modules" {
            for &(n, c) in pk.dict(x).unwrap_or(&[]) {
                let child_name = match n {
                    PyValue::Int(i) => i.to_string(),
                    other => pk.str(other).unwrap_or("?").to_owned(),
                };
                if let Some(child) = read(pk, c, depth + 1, visits) {
                    m.children.push((child_name, child));
                }
            }
        } else if !name.starts_with('_') && name != "training" {
            if let Some(j) = scalar(pk, x) {
                m.attrs.insert(name.to_owned(), j);
            }
        }
    }
    Some(m)
}

/// `copyreg._reconstructor(cls, object, None)` (protocol 0/1 and Python 2 pickles) names the
/// real class in its first argument.
fn real_class(pk: &Pickle, class: &str, args: Option<PyValue>) -> String {
    if class.ends_with("._reconstructor") {
        if let Some(first) = args.and_then(|a| pk.seq(a)).and_then(|a| a.first().copied()) {
            if let Some(Obj::Global { module, name }) = pk.obj(first) {
                return format!("{module}.{name}");
            }
        }
    }
    class.to_owned()
}

/// Plain scalars and short tuples of scalars (`kernel_size=(3, 3)`) as JSON.
fn scalar(pk: &Pickle, v: PyValue) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    match v {
        PyValue::None => Some(J::Null),
        PyValue::Bool(b) => Some(J::Bool(b)),
        PyValue::Int(i) => Some(J::from(i)),
        PyValue::Float(f) => serde_json::Number::from_f64(f).map(J::Number),
        PyValue::Ref(_) => match pk.obj(v)? {
            Obj::Str(s) if s.len() <= 256 => Some(J::String(s.clone())),
            Obj::Tuple(items) | Obj::List(items) if items.len() <= 8 => {
                items.iter().map(|&x| if matches!(x, PyValue::Ref(_)) { None } else { scalar(pk, x) }).collect::<Option<Vec<_>>>().map(J::Array)
            }
            _ => None,
        },
    }
}
