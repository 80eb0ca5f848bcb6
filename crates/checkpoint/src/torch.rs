//! PyTorch `.pth`/`.pt` files, read without executing pickle code.
//!
//! * zip format (`torch.save`, PyTorch ≥ 1.6): `<name>/data.pkl` plus one stored entry per
//!   storage, `<name>/data/<key>`; entry CRC-32s are verified.
//! * legacy format (PyTorch ≤ 1.5, `_use_new_zipfile_serialization=False`, 0.4-era files):
//!   consecutive pickles (magic number, protocol version, system info, the object, the sorted
//!   storage keys) followed by each storage's bytes, prefixed by its element count as i64.
//!
//! Tensors are strided views of storages; they are materialised into contiguous row-major
//! bytes. A view that already is contiguous borrows its bytes from the file when the file is
//! memory-mapped ([`crate::import`]): a large state dict is then never copied. The total materialised size is bounded (see [`materialize_budget`]), so shared
//! storages or stride-0 views cannot make a small file allocate without limit.

use crate::pickle::{self, Fault, Obj, PResult, Pickle, PyValue, TensorRef};
use crate::tensor::Source;
use crate::{DType, SourceFormat, TensorData, TensorMap};
use std::collections::{BTreeMap, HashMap};

/// The legacy format's magic number, 0x1950a86a20f9469cfc6c, as pickled (little-endian).
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL: i64 = 1001;

/// Keys under which training-checkpoint dicts keep the model's state dict, in priority order.
const STATE_DICT_KEYS: &[&str] = &["state_dict", "model_state_dict", "model_state", "model", "net", "network", "weights", "params"];

/// Most bytes all materialised tensors of one file may take: 4× the file plus 256 MiB.
pub(crate) fn materialize_budget(file_len: usize) -> u64 {
    (file_len as u64).saturating_mul(4).saturating_add(256 << 20)
}

/// What a PyTorch file yields, before it is wrapped into [`crate::Imported`].
pub(crate) struct TorchImport {
    pub source: SourceFormat,
    pub tensors: TensorMap,
    pub class_to_idx: Option<BTreeMap<String, usize>>,
    pub arch: Option<String>,
    pub extra: serde_json::Map<String, serde_json::Value>,
    pub skipped: Vec<String>,
    pub modules: BTreeMap<String, crate::PickledModule>,
}

/// True when `data` starts like a legacy PyTorch file (a protocol-2 pickle of the magic number).
pub(crate) fn is_legacy(data: &[u8]) -> bool {
    data.len() >= 4 && data[0] == 0x80 && data[1] <= 5 && data[2] == 0x8a && data[3] == 0x0a
}

/// Resolved storages: key → (dtype, bytes of the root storage).
struct Storages<'a> {
    by_key: HashMap<String, (DType, &'a [u8])>,
}

/// Reads a zip-format PyTorch file (contiguous tensors borrow from `src`'s shared buffer).
pub(crate) fn read_zip(src: Source<'_>) -> PResult<TorchImport> {
    let data = src.data;
    let entries = crate::zip::entries(data)?;
    let pkl = entries
        .iter()
        .filter(|e| e.name.ends_with("/data.pkl") || e.name == "data.pkl")
        .min_by_key(|e| e.name.len())
        .ok_or_else(|| Fault::Unsupported("zip archive without data.pkl: not a torch.save file".into()))?;
    let prefix = &pkl.name[..pkl.name.len() - "data.pkl".len()];
    let find =
        |name: &str| entries.iter().find(|e| e.name.len() == prefix.len() + name.len() && e.name.starts_with(prefix) && e.name.ends_with(name));
    if let Some(bo) = find("byteorder") {
        let order = &data[bo.start..bo.start + bo.len];
        if order != b"little" {
            return Err(Fault::Unsupported(format!("tensors stored in {} byte order", String::from_utf8_lossy(order))));
        }
    }
    crate::zip::check_crc(data, pkl)?;
    let pk = pickle::parse(&data[pkl.start..pkl.start + pkl.len])?;
    let mut by_key = HashMap::new();
    for obj in &pk.arena {
        if let Obj::Storage(s) = obj {
            if by_key.contains_key(&s.key) {
                continue;
            }
            let Some(dtype) = s.dtype else { continue };
            let e =
                find(&format!("data/{}", s.key)).ok_or_else(|| Fault::Corrupt(format!("zip: storage {:?} has no entry data/{}", s.key, s.key)))?;
            crate::zip::check_crc(data, e)?;
            by_key.insert(s.key.clone(), (dtype, &data[e.start..e.start + e.len]));
        }
    }
    interpret(&pk, &Storages { by_key }, SourceFormat::PytorchZip, src)
}

/// Reads a legacy-format PyTorch file (contiguous tensors borrow from `src`'s shared buffer).
pub(crate) fn read_legacy(src: Source<'_>) -> PResult<TorchImport> {
    let data = src.data;
    let magic = pickle::parse(data)?;
    let ok = matches!(magic.obj(magic.root), Some(Obj::BigInt(b)) if b.as_slice() == LEGACY_MAGIC);
    if !ok {
        return Err(Fault::Unsupported("pickle without PyTorch's magic number: not a torch.save file".into()));
    }
    let mut pos = magic.consumed;
    let proto = pickle::parse(&data[pos..])?;
    pos += proto.consumed;
    if proto.root != PyValue::Int(LEGACY_PROTOCOL) {
        return Err(Fault::Unsupported(format!("legacy PyTorch protocol version {:?} (expected 1001)", proto.root)));
    }
    let sys = pickle::parse(&data[pos..])?;
    pos += sys.consumed;
    if let Some(d) = sys.dict(sys.root) {
        for (k, v) in d {
            if sys.str(*k) == Some("little_endian") && *v == PyValue::Bool(false) {
                return Err(Fault::Unsupported("file written on a big-endian machine".into()));
            }
        }
    }
    let pk = pickle::parse(&data[pos..])?;
    pos += pk.consumed;
    let keys_pk = pickle::parse(&data[pos..])?;
    pos += keys_pk.consumed;
    let keys = keys_pk.seq(keys_pk.root).ok_or_else(|| Fault::Corrupt("legacy: storage key list is not a list".into()))?;
    // dtype of each root storage: the first persistent id that named it.
    let mut dtypes: HashMap<&str, Option<DType>> = HashMap::new();
    for obj in &pk.arena {
        if let Obj::Storage(s) = obj {
            dtypes.entry(s.key.as_str()).or_insert(s.dtype);
        }
    }
    let mut by_key = HashMap::new();
    for &k in keys {
        let key = match k {
            PyValue::Int(i) => i.to_string(),
            other => keys_pk.str(other).ok_or_else(|| Fault::Corrupt("legacy: storage key is not a string".into()))?.to_owned(),
        };
        let dtype = match dtypes.get(key.as_str()) {
            Some(Some(d)) => *d,
            Some(None) => {
                return Err(Fault::Unsupported(format!("legacy: storage {key:?} has an unsupported storage type")));
            }
            None => return Err(Fault::Corrupt(format!("legacy: storage {key:?} listed but never referenced"))),
        };
        let head = data.get(pos..pos + 8).ok_or_else(|| Fault::Corrupt(format!("legacy: truncated before storage {key:?}")))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(head);
        let numel = i64::from_le_bytes(a);
        let nbytes = u64::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(dtype.size_in_bytes() as u64))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Fault::Corrupt(format!("legacy: storage {key:?} declares {numel} elements")))?;
        let start = pos + 8;
        let bytes = start.checked_add(nbytes).and_then(|end| data.get(start..end)).ok_or_else(|| {
            Fault::Corrupt(format!(
                "legacy: storage {key:?} declares {nbytes} bytes but only {} remain (truncated?)",
                data.len().saturating_sub(start)
            ))
        })?;
        pos = start + nbytes;
        by_key.insert(key, (dtype, bytes));
    }
    interpret(&pk, &Storages { by_key }, SourceFormat::PytorchLegacy, src)
}

struct Ctx<'p, 'a> {
    pk: &'p Pickle,
    storages: &'p Storages<'a>,
    /// The file: contiguous tensors borrow from it when it is a shared buffer.
    src: Source<'a>,
    budget: u64,
    /// Bytes left for names built from pickle strings (shared strings can be referenced many
    /// times).
    names: std::cell::Cell<u64>,
    /// Objects visited while walking pickled modules.
    visits: u32,
    skipped: Vec<String>,
}

impl<'p> Ctx<'p, '_> {
    /// A dict key as a name (`"<key>"` when it is not a string or number), charged against
    /// the name budget.
    fn key_string(&self, k: PyValue) -> PResult<String> {
        let s = match k {
            PyValue::Int(i) => i.to_string(),
            PyValue::Bool(b) => if b { "True" } else { "False" }.to_owned(),
            other => self.pk.str(other).unwrap_or("<key>").to_owned(),
        };
        let left = self.names.get();
        if s.len() as u64 > left {
            return Err(Fault::Corrupt("names built from the pickle exceed the size limit (pickle bomb?)".into()));
        }
        self.names.set(left.saturating_sub(s.len() as u64 + 16));
        Ok(s)
    }

    fn tensor_ref(&self, v: PyValue) -> Option<&'p TensorRef> {
        match self.pk.obj(v) {
            Some(Obj::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    fn is_tensor_dict(&self, v: PyValue) -> bool {
        match self.pk.dict(v) {
            Some(d) => !d.is_empty() && d.iter().all(|(_, x)| self.tensor_ref(*x).is_some()),
            None => false,
        }
    }

    /// Materialises every tensor of a dict; entries that are not tensors are reported.
    fn tensors_of(&mut self, v: PyValue, prefix: &str, out: &mut TensorMap) -> PResult<()> {
        let Some(d) = self.pk.dict(v) else {
            return Ok(());
        };
        for &(k, x) in d {
            let name = format!("{prefix}{}", self.key_string(k)?);
            match self.tensor_ref(x) {
                Some(t) => {
                    if let Some(td) = self.materialize(t, &name)? {
                        out.insert(name, td);
                    }
                }
                None => self.skipped.push(format!("{name}: {} (not a tensor)", self.describe(x))),
            }
        }
        Ok(())
    }

    /// A contiguous copy of a strided tensor; `None` (and a `skipped` note) for unsupported
    /// storage types.
    fn materialize(&mut self, t: &TensorRef, name: &str) -> PResult<Option<TensorData>> {
        let Some(Obj::Storage(s)) = self.pk.arena.get(t.storage as usize) else {
            return Err(Fault::Corrupt(format!("tensor {name:?} without storage")));
        };
        let Some(dtype) = s.dtype else {
            self.skipped.push(format!("{name}: storage type {} not supported", s.type_name));
            return Ok(None);
        };
        let (_, root) =
            *self.storages.by_key.get(&s.key).ok_or_else(|| Fault::Corrupt(format!("tensor {name:?}: storage {:?} has no data", s.key)))?;
        let es = dtype.size_in_bytes();
        // A typed view of the root storage (legacy storage views select a sub-range).
        let bytes: &[u8] = match s.view {
            None => root,
            Some((off, size)) => {
                let (a, b) = span(off, size, es).ok_or_else(|| Fault::Corrupt(format!("tensor {name:?}: storage view out of range")))?;
                root.get(a..b).ok_or_else(|| Fault::Corrupt(format!("tensor {name:?}: storage view out of range")))?
            }
        };
        let shape: Vec<usize> = t
            .shape
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<_>>()
            .ok_or_else(|| Fault::Corrupt(format!("tensor {name:?}: size out of range")))?;
        let numel = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .ok_or_else(|| Fault::Corrupt(format!("tensor {name:?}: size {shape:?} overflows")))?;
        let out_len = numel.checked_mul(es as u64).ok_or_else(|| Fault::Corrupt(format!("tensor {name:?}: size {shape:?} overflows")))?;
        if numel == 0 {
            return Ok(Some(TensorData { dtype, shape, bytes: Vec::new().into() }));
        }
        // Highest element index the view touches must lie inside the storage.
        let mut last = t.offset;
        for (&d, &st) in t.shape.iter().zip(&t.stride) {
            last = (d - 1)
                .checked_mul(st)
                .and_then(|x| last.checked_add(x))
                .ok_or_else(|| Fault::Corrupt(format!("tensor {name:?}: strides overflow")))?;
        }
        let avail = (bytes.len() / es) as u64;
        if last >= avail {
            return Err(Fault::Corrupt(format!(
                "tensor {name:?} (size {shape:?}, stride {:?}, offset {}) reaches element {last} of a storage of {avail}",
                t.stride, t.offset
            )));
        }
        if out_len > self.budget {
            return Err(Fault::Corrupt(format!(
                "tensor {name:?} would need {out_len} bytes, beyond the limit for this file (views of shared storages expanded too far)"
            )));
        }
        self.budget -= out_len;
        let out_len = out_len as usize;
        let off = t.offset as usize * es;
        // Contiguous (dims of size 1 may have any stride): one copy.
        let mut expect = 1u64;
        let mut contiguous = true;
        for (&d, &st) in t.shape.iter().zip(&t.stride).rev() {
            if d != 1 && st != expect {
                contiguous = false;
                break;
            }
            expect *= d;
        }
        if contiguous {
            return Ok(Some(TensorData { dtype, shape, bytes: self.src.bytes(&bytes[off..off + out_len]) }));
        }
        let mut out = Vec::with_capacity(out_len);
        let nd = shape.len();
        let mut idx = vec![0usize; nd];
        let inner = shape[nd - 1];
        let inner_stride = t.stride[nd - 1] as usize;
        loop {
            let mut base = t.offset as usize;
            for (i, st) in idx.iter().zip(&t.stride).take(nd - 1) {
                base += i * *st as usize;
            }
            if inner_stride == 1 {
                out.extend_from_slice(&bytes[base * es..(base + inner) * es]);
            } else {
                for j in 0..inner {
                    let e = (base + j * inner_stride) * es;
                    out.extend_from_slice(&bytes[e..e + es]);
                }
            }
            // Odometer over the outer dims.
            let mut k = nd - 1;
            loop {
                if k == 0 {
                    return Ok(Some(TensorData { dtype, shape, bytes: out.into() }));
                }
                k -= 1;
                idx[k] += 1;
                if idx[k] < shape[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
    }

    fn describe(&self, v: PyValue) -> String {
        match self.pk.obj(v) {
            Some(Obj::Object { class, .. }) => format!("pickled object {class} (not executed)"),
            Some(Obj::Tensor(_)) => "tensor".into(),
            Some(Obj::Storage(s)) => format!("bare storage {}", s.type_name),
            Some(Obj::Dict(d)) => format!("dict of {} entries", d.len()),
            Some(Obj::List(l)) => format!("list of {} items", l.len()),
            Some(Obj::Tuple(l)) => format!("tuple of {} items", l.len()),
            Some(Obj::Global { module, name }) => format!("reference to {module}.{name}"),
            Some(Obj::Bytes(b)) => format!("{} bytes", b.len()),
            Some(Obj::BigInt(_)) => "big integer".into(),
            Some(Obj::Set(s)) => format!("set of {} items", s.len()),
            Some(Obj::Str(_)) => "string".into(),
            None => "value".into(),
        }
    }

    /// Recovers parameters and buffers from the saved state of a pickled `nn.Module` (its
    /// `_parameters`, `_buffers` and `_modules` dicts), without executing anything.
    fn module_tensors(&mut self, v: PyValue, prefix: &str, depth: u32, out: &mut TensorMap) -> PResult<()> {
        self.visits += 1;
        if depth > 64 || self.visits > 1_000_000 {
            return Err(Fault::Corrupt("pickled module nested too deeply or referencing itself".into()));
        }
        let Some(Obj::Object { state: Some(state), .. }) = self.pk.obj(v) else {
            return Ok(());
        };
        let Some(d) = self.pk.dict(*state) else {
            return Ok(());
        };
        let d = d.to_vec();
        for (k, x) in d {
            match self.pk.str(k) {
                Some("_parameters") | Some("_buffers") => {
                    let Some(items) = self.pk.dict(x) else {
                        continue;
                    };
                    for &(n, t) in items {
                        let name = format!("{prefix}{}", self.key_string(n)?);
                        if let Some(tr) = self.tensor_ref(t) {
                            let tr = tr.clone();
                            if let Some(td) = self.materialize(&tr, &name)? {
                                out.insert(name, td);
                            }
                        }
                    }
                }
                Some("_modules") => {
                    let Some(items) = self.pk.dict(x) else {
                        continue;
                    };
                    for &(n, m) in items.to_vec().iter() {
                        let p = format!("{prefix}{}.", self.key_string(n)?);
                        self.module_tensors(m, &p, depth + 1, out)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn span(off: u64, size: u64, es: usize) -> Option<(usize, usize)> {
    let a = usize::try_from(off.checked_mul(es as u64)?).ok()?;
    let b = usize::try_from(off.checked_add(size)?.checked_mul(es as u64)?).ok()?;
    Some((a, b))
}

/// Error raised while converting a pickle value to JSON.
enum NotJson {
    Has(String),
}

/// What one [`to_json`] conversion may still visit and copy.
struct JsonBudget {
    nodes: u32,
    bytes: u64,
}

impl JsonBudget {
    fn new() -> Self {
        JsonBudget { nodes: 100_000, bytes: 16 << 20 }
    }
    fn take(&mut self, bytes: usize) -> Result<(), NotJson> {
        self.nodes = self.nodes.checked_sub(1).ok_or_else(|| NotJson::Has("very large data".into()))?;
        self.bytes = self.bytes.checked_sub(bytes as u64).ok_or_else(|| NotJson::Has("very large data".into()))?;
        Ok(())
    }
}

/// Converts plain data (numbers, strings, lists, dicts) to JSON; tensors, opaque objects and
/// bytes are not plain data. Depth and node count are bounded (shared sub-objects and cycles
/// could otherwise make this exponential or endless).
fn to_json(pk: &Pickle, v: PyValue, depth: u32, budget: &mut JsonBudget) -> Result<serde_json::Value, NotJson> {
    use serde_json::Value as J;
    let len = match pk.obj(v) {
        Some(Obj::Str(s)) => s.len(),
        _ => 0,
    };
    budget.take(len)?;
    if depth > 32 {
        return Err(NotJson::Has("deeply nested data".into()));
    }
    Ok(match v {
        PyValue::None => J::Null,
        PyValue::Bool(b) => J::Bool(b),
        PyValue::Int(i) => J::from(i),
        PyValue::Float(f) => serde_json::Number::from_f64(f).map(J::Number).unwrap_or_else(|| J::String(f.to_string())),
        PyValue::Ref(_) => match pk.obj(v) {
            Some(Obj::Str(s)) => J::String(s.clone()),
            Some(Obj::List(l)) | Some(Obj::Tuple(l)) | Some(Obj::Set(l)) => {
                J::Array(l.iter().map(|&x| to_json(pk, x, depth + 1, budget)).collect::<Result<_, _>>()?)
            }
            Some(Obj::Dict(d)) => {
                let mut m = serde_json::Map::new();
                for &(k, x) in d {
                    let key = match k {
                        PyValue::Int(i) => i.to_string(),
                        PyValue::Bool(b) => b.to_string(),
                        PyValue::Float(f) => f.to_string(),
                        PyValue::None => "None".into(),
                        r => pk.str(r).map(str::to_owned).ok_or_else(|| NotJson::Has("non-string dict keys".into()))?,
                    };
                    budget.take(key.len())?;
                    m.insert(key, to_json(pk, x, depth + 1, budget)?);
                }
                J::Object(m)
            }
            Some(Obj::Global { module, name }) => J::String(format!("{module}.{name}")),
            Some(Obj::Object { class, .. }) => return Err(NotJson::Has(format!("pickled object {class} (not executed)"))),
            Some(Obj::Tensor(_)) => return Err(NotJson::Has("tensors".into())),
            Some(Obj::Storage(_)) => return Err(NotJson::Has("storages".into())),
            Some(Obj::Bytes(b)) => return Err(NotJson::Has(format!("{} bytes of binary data", b.len()))),
            Some(Obj::BigInt(_)) => return Err(NotJson::Has("an integer beyond 64 bits".into())),
            None => return Err(NotJson::Has("a dangling reference".into())),
        },
    })
}

/// Turns the unpickled root object into tensors, class map, arch and extra entries.
fn interpret<'a>(pk: &Pickle, storages: &Storages<'a>, source: SourceFormat, src: Source<'a>) -> PResult<TorchImport> {
    let file_len = src.data.len();
    let mut cx = Ctx {
        pk,
        storages,
        src,
        budget: materialize_budget(file_len),
        names: std::cell::Cell::new((file_len as u64).saturating_mul(4).saturating_add(16 << 20)),
        visits: 0,
        skipped: Vec::new(),
    };
    let mut tensors = TensorMap::new();
    let mut class_to_idx = None;
    let mut arch = None;
    let mut extra = serde_json::Map::new();
    let mut modules = BTreeMap::new();
    let root = pk.root;
    let mut visits = 0;
    if let Some(m) = crate::module_tree::read(pk, root, 0, &mut visits) {
        modules.insert(String::new(), m);
    } else if let Some(d) = pk.dict(root) {
        for &(k, v) in d {
            if let Some(m) = crate::module_tree::read(pk, v, 0, &mut visits) {
                modules.insert(cx.key_string(k)?, m);
            }
        }
    }
    if cx.is_tensor_dict(root) {
        cx.tensors_of(root, "", &mut tensors)?;
    } else if let Some(d) = pk.dict(root) {
        let weights_key = STATE_DICT_KEYS.iter().find_map(|want| d.iter().find(|(k, v)| pk.str(*k) == Some(*want) && cx.is_tensor_dict(*v)).copied());
        if let Some((_, v)) = weights_key {
            cx.tensors_of(v, "", &mut tensors)?;
        }
        for &(k, v) in d {
            let name = cx.key_string(k)?;
            if weights_key.map(|(wk, _)| wk) == Some(k) {
                continue;
            }
            match name.as_str() {
                "class_to_idx" => match class_map(&cx, v)? {
                    Some(m) => {
                        class_to_idx = Some(m);
                        continue;
                    }
                    None => {
                        cx.skipped.push("class_to_idx: not a mapping of class name to non-negative index".into());
                        continue;
                    }
                },
                "arch" | "architecture" => {
                    if let Some(s) = pk.str(v) {
                        arch = Some(s.to_owned());
                        continue;
                    }
                }
                _ => {}
            }
            // With no state-dict entry, top-level tensors are the weights.
            if weights_key.is_none() {
                if let Some(t) = cx.tensor_ref(v) {
                    if let Some(td) = cx.materialize(t, &name)? {
                        tensors.insert(name, td);
                    }
                    continue;
                }
            }
            if name.contains("optimizer") || name.contains("scheduler") || name.contains("scaler") {
                cx.skipped.push(format!("{name}: optimizer/scheduler state (not imported)"));
                continue;
            }
            // A pickled module with no separate state dict: recover its weights from its state.
            if tensors.is_empty() && matches!(pk.obj(v), Some(Obj::Object { .. })) {
                let mut rec = TensorMap::new();
                cx.module_tensors(v, "", 0, &mut rec)?;
                if !rec.is_empty() {
                    cx.skipped.push(format!("{name}: {}; {} parameters/buffers recovered from its saved state", cx.describe(v), rec.len()));
                    tensors = rec;
                    continue;
                }
            }
            match to_json(pk, v, 0, &mut JsonBudget::new()) {
                Ok(j) => {
                    extra.insert(name, j);
                }
                Err(NotJson::Has(what)) => {
                    let desc = cx.describe(v);
                    if desc.starts_with("pickled object") {
                        cx.skipped.push(format!("{name}: {desc}"));
                    } else {
                        cx.skipped.push(format!("{name}: {desc} containing {what} (not imported)"));
                    }
                }
            }
        }
    } else if let Some(t) = cx.tensor_ref(root) {
        let t = t.clone();
        if let Some(td) = cx.materialize(&t, "tensor")? {
            tensors.insert("tensor".into(), td);
        }
    } else if matches!(pk.obj(root), Some(Obj::Object { .. })) {
        cx.module_tensors(root, "", 0, &mut tensors)?;
        let note = if tensors.is_empty() { String::new() } else { format!("; {} parameters/buffers recovered from its saved state", tensors.len()) };
        cx.skipped.push(format!("<root>: {}{note}", cx.describe(root)));
    } else {
        cx.skipped.push(format!("<root>: {} (no tensors found)", cx.describe(root)));
    }
    Ok(TorchImport { source, tensors, class_to_idx, arch, extra, skipped: cx.skipped, modules })
}

/// `class_to_idx`: a dict of class name (or int) to non-negative index; `None` if it is not.
fn class_map(cx: &Ctx<'_, '_>, v: PyValue) -> PResult<Option<BTreeMap<String, usize>>> {
    let Some(d) = cx.pk.dict(v) else {
        return Ok(None);
    };
    let mut m = BTreeMap::new();
    for &(k, x) in d {
        if !matches!(k, PyValue::Int(_)) && cx.pk.str(k).is_none() {
            return Ok(None);
        }
        let key = cx.key_string(k)?;
        let PyValue::Int(i) = x else { return Ok(None) };
        let Ok(i) = usize::try_from(i) else {
            return Ok(None);
        };
        m.insert(key, i);
    }
    Ok(Some(m))
}
