//! A pickle reader that never executes code.
//!
//! It interprets the pickle opcodes of protocols 0-5 as data. `GLOBAL`/`STACK_GLOBAL` only
//! *name* a callable; `REDUCE`/`NEWOBJ` apply a callable only when it is on an explicit
//! whitelist of rebuild functions whose effect is re-implemented here as pure data
//! construction (the equivalent of PyTorch's `weights_only=True`). Any other call is recorded
//! as an opaque [`Obj::Object`] carrying the class name, so callers can report it by name.
//!
//! All objects live in a flat arena and values refer to them by index, so nesting depth or
//! reference cycles cannot overflow the stack when values are dropped, and memory is bounded
//! by a constant times the input length (every opcode consumes at least one byte and creates
//! O(1) objects; strings and byte strings are bounded by the bytes remaining in the input).

use crate::DType;
use std::cell::Cell;
use std::collections::HashMap;

/// The opcodes, named as in CPython's `pickle.py` (protocol 0 text opcodes first, then what each
/// later protocol added).
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    // Protocol 2.
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    // Protocol 3.
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    // Protocol 4.
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    // Protocol 5.
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;
}

/// A parse failure: the input is damaged, or uses a feature this reader refuses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fault {
    /// Malformed input.
    Corrupt(String),
    /// Well-formed but unsupported.
    Unsupported(String),
}

impl Fault {
    pub(crate) fn at(self, path: &std::path::Path) -> crate::Error {
        match self {
            Fault::Corrupt(d) => crate::Error::corrupt(path, d),
            Fault::Unsupported(d) => crate::Error::unsupported(path, d),
        }
    }
}

pub(crate) type PResult<T> = Result<T, Fault>;

fn corrupt<T>(msg: impl Into<String>) -> PResult<T> {
    Err(Fault::Corrupt(msg.into()))
}

/// A value on the stack or inside a container: scalars inline, everything else by arena index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PyValue {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Ref(u32),
}

/// A reference to a storage, as named by a persistent id.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageRef {
    /// Key of the storage's bytes (zip entry `data/<key>` or legacy storage key).
    pub key: String,
    /// Element type, `None` when the storage class is not supported.
    pub dtype: Option<DType>,
    /// Storage class name, e.g. `torch.FloatStorage`.
    pub type_name: String,
    /// Number of elements the pickle declares for the root storage.
    pub numel: u64,
    /// Legacy storage views: (element offset into the root storage, element count).
    pub view: Option<(u64, u64)>,
}

/// A tensor as rebuilt by `_rebuild_tensor(_v2)`: a strided view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    /// Arena index of the [`Obj::Storage`].
    pub storage: u32,
    /// Offset in elements.
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

/// An object in the arena.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Obj {
    Str(String),
    Bytes(Vec<u8>),
    /// An integer that does not fit i64: little-endian two's complement bytes.
    BigInt(Vec<u8>),
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    Dict(Vec<(PyValue, PyValue)>),
    Set(Vec<PyValue>),
    /// A named global that was never called (e.g. a class, `torch.float32`).
    Global {
        module: String,
        name: String,
    },
    /// A call to a non-whitelisted callable, NOT executed: the class name, its arguments and
    /// any state applied by `BUILD`.
    Object {
        class: String,
        args: Option<PyValue>,
        state: Option<PyValue>,
    },
    Storage(StorageRef),
    Tensor(TensorRef),
}

/// Result of running one pickle.
pub(crate) struct Pickle {
    pub arena: Vec<Obj>,
    pub root: PyValue,
    /// Bytes consumed, including the STOP opcode.
    pub consumed: usize,
}

impl Pickle {
    pub(crate) fn obj(&self, v: PyValue) -> Option<&Obj> {
        match v {
            PyValue::Ref(i) => self.arena.get(i as usize),
            _ => None,
        }
    }
    pub(crate) fn str(&self, v: PyValue) -> Option<&str> {
        match self.obj(v) {
            Some(Obj::Str(s)) => Some(s),
            _ => None,
        }
    }
    /// Items of a tuple or list.
    pub(crate) fn seq(&self, v: PyValue) -> Option<&[PyValue]> {
        match self.obj(v) {
            Some(Obj::Tuple(x)) | Some(Obj::List(x)) | Some(Obj::Set(x)) => Some(x),
            _ => None,
        }
    }
    pub(crate) fn dict(&self, v: PyValue) -> Option<&[(PyValue, PyValue)]> {
        match self.obj(v) {
            Some(Obj::Dict(x)) => Some(x),
            _ => None,
        }
    }
}

/// Maps a storage class name to a dtype (`torch.FloatStorage` → F32, also `torch.cuda.*`).
pub(crate) fn storage_dtype(module: &str, name: &str) -> Option<DType> {
    if module != "torch" && module != "torch.cuda" {
        return None;
    }
    Some(match name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" | "UntypedStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        _ => return None,
    })
}

const MAX_DIMS: usize = 64;

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<PyValue>,
    marks: Vec<usize>,
    memo: HashMap<u32, PyValue>,
    arena: Vec<Obj>,
    /// Bytes copied out of existing objects so far (memoised objects can be referenced many
    /// times, so copies are charged against a budget proportional to the input).
    copied: Cell<u64>,
    copy_limit: u64,
}

/// Runs the pickle at the start of `data` (trailing bytes are ignored; see
/// [`Pickle::consumed`]).
pub(crate) fn parse(data: &[u8]) -> PResult<Pickle> {
    let copy_limit = (data.len() as u64).saturating_mul(16).saturating_add(16 << 20);
    let mut vm = Vm { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), arena: Vec::new(), copied: Cell::new(0), copy_limit };
    let root = vm.run()?;
    Ok(Pickle { arena: vm.arena, root, consumed: vm.pos })
}

impl<'a> Vm<'a> {
    /// Charges `n` copied bytes; exceeding the budget is reported after the current opcode.
    fn charge(&self, n: usize) {
        self.copied.set(self.copied.get().saturating_add(n as u64));
    }

    fn alloc(&mut self, o: Obj) -> PResult<PyValue> {
        let i = u32::try_from(self.arena.len()).map_err(|_| Fault::Corrupt("pickle creates too many objects".into()))?;
        self.arena.push(o);
        Ok(PyValue::Ref(i))
    }

    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(e) => {
                let s = &self.data[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => corrupt(format!("pickle truncated: needs {n} bytes at offset {} but only {} remain", self.pos, self.data.len() - self.pos)),
        }
    }
    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> PResult<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> PResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> PResult<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// Length-prefixed payload; the length is checked against the remaining input before
    /// anything is allocated.
    fn len_bytes(&mut self, n: u64) -> PResult<&'a [u8]> {
        let n = usize::try_from(n).map_err(|_| Fault::Corrupt(format!("declared length {n} is absurd")))?;
        self.take(n)
    }
    fn line(&mut self) -> PResult<&'a [u8]> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => corrupt("pickle truncated: unterminated text line"),
        }
    }
    fn pop(&mut self) -> PResult<PyValue> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return corrupt(format!("pickle stack underflow at offset {}", self.pos));
        }
        self.stack.pop().ok_or_else(|| Fault::Corrupt("pickle stack underflow".into()))
    }
    fn top(&self) -> PResult<PyValue> {
        self.stack.last().copied().ok_or_else(|| Fault::Corrupt("pickle stack empty".into()))
    }
    fn pop_mark(&mut self) -> PResult<Vec<PyValue>> {
        let m = self.marks.pop().ok_or_else(|| Fault::Corrupt(format!("pickle: no MARK at offset {}", self.pos)))?;
        if m > self.stack.len() {
            return corrupt("pickle: MARK above stack top");
        }
        Ok(self.stack.split_off(m))
    }
    fn str_obj(&mut self, s: String) -> PResult<PyValue> {
        self.alloc(Obj::Str(s))
    }
    fn utf8(&mut self, b: &[u8]) -> PResult<PyValue> {
        match std::str::from_utf8(b) {
            Ok(s) => self.str_obj(s.to_owned()),
            Err(_) => corrupt(format!("pickle: invalid UTF-8 string before offset {}", self.pos)),
        }
    }
    /// Python 2 `str` (BINSTRING): decoded like `torch.load(encoding="utf-8")` would, falling
    /// back to bytes when it is not UTF-8.
    fn py2str(&mut self, b: &[u8]) -> PResult<PyValue> {
        match std::str::from_utf8(b) {
            Ok(s) => self.str_obj(s.to_owned()),
            Err(_) => self.alloc(Obj::Bytes(b.to_vec())),
        }
    }
    fn memo_put(&mut self, idx: u32) -> PResult<()> {
        let v = self.top()?;
        if self.memo.len() > self.data.len() && !self.memo.contains_key(&idx) {
            return corrupt("pickle memo larger than the input");
        }
        self.memo.insert(idx, v);
        Ok(())
    }
    fn memo_get(&mut self, idx: u32) -> PResult<()> {
        match self.memo.get(&idx) {
            Some(&v) => {
                self.stack.push(v);
                Ok(())
            }
            None => corrupt(format!("pickle refers to memo entry {idx} that was never stored")),
        }
    }
    fn long_from_le(&mut self, b: &[u8]) -> PResult<PyValue> {
        if b.is_empty() {
            return Ok(PyValue::Int(0));
        }
        if b.len() <= 8 {
            let neg = b[b.len() - 1] & 0x80 != 0;
            let mut a = if neg { [0xffu8; 8] } else { [0u8; 8] };
            a[..b.len()].copy_from_slice(b);
            return Ok(PyValue::Int(i64::from_le_bytes(a)));
        }
        self.alloc(Obj::BigInt(b.to_vec()))
    }
    fn text_int(&mut self, line: &[u8]) -> PResult<PyValue> {
        let s = std::str::from_utf8(line).map_err(|_| Fault::Corrupt("pickle: bad INT text".into()))?;
        let s = s.trim().trim_end_matches('L');
        match s {
            "00" => return Ok(PyValue::Bool(false)),
            "01" => return Ok(PyValue::Bool(true)),
            _ => {}
        }
        match s.parse::<i64>() {
            Ok(i) => Ok(PyValue::Int(i)),
            Err(_) => {
                let digits = s.strip_prefix('-').unwrap_or(s);
                if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
                    self.alloc(Obj::BigInt(Vec::new()))
                } else {
                    corrupt(format!("pickle: bad integer literal {s:?}"))
                }
            }
        }
    }

    fn run(&mut self) -> PResult<PyValue> {
        loop {
            let at = self.pos;
            if self.copied.get() > self.copy_limit {
                return corrupt(format!("pickle bomb: copies of shared objects exceed {} bytes before offset {at}", self.copy_limit));
            }
            let code = self.u8()?;
            if code == op::STOP {
                return self.pop();
            }
            let handled =
                self.control(code)? || self.scalar(code)? || self.text(code)? || self.container(code)? || self.memo_op(code)? || self.object(code)?;
            if handled {
                continue;
            }
            return match code {
                op::NEXT_BUFFER | op::READONLY_BUFFER => Err(Fault::Unsupported("pickle protocol 5 out-of-band buffers".into())),
                op::EXT1..=op::EXT4 => Err(Fault::Unsupported("pickle extension registry opcodes (EXT1/2/4)".into())),
                other => corrupt(format!("pickle: unknown opcode 0x{other:02x} at offset {at}")),
            };
        }
    }

    /// Stream and stack control: the protocol header, frames, marks, `POP`, `DUP`. Returns whether `code` is one of them.
    fn control(&mut self, code: u8) -> PResult<bool> {
        match code {
            op::PROTO => {
                let p = self.u8()?;
                if p > 5 {
                    return Err(Fault::Unsupported(format!("pickle protocol {p} (supported: 0-5)")));
                }
            }
            op::FRAME => {
                // FRAME: the length is only a hint for buffering.
                self.u64()?;
            }
            op::MARK => {
                self.marks.push(self.stack.len());
            }
            op::POP => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let v = self.top()?;
                self.stack.push(v);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Scalars: `None`, booleans, integers of every width and text form, floats. Returns whether `code` is one of them.
    fn scalar(&mut self, code: u8) -> PResult<bool> {
        match code {
            op::NONE => {
                self.stack.push(PyValue::None);
            }
            op::NEWTRUE => {
                self.stack.push(PyValue::Bool(true));
            }
            op::NEWFALSE => {
                self.stack.push(PyValue::Bool(false));
            }
            op::BININT => {
                let v = self.u32()? as i32;
                self.stack.push(PyValue::Int(v as i64));
            }
            op::BININT1 => {
                let v = self.u8()?;
                self.stack.push(PyValue::Int(v as i64));
            }
            op::BININT2 => {
                let v = self.u16()?;
                self.stack.push(PyValue::Int(v as i64));
            }
            op::INT | op::LONG => {
                let line = self.line()?;
                let v = self.text_int(line)?;
                self.stack.push(v);
            }
            op::LONG1 => {
                let n = self.u8()? as u64;
                let b = self.len_bytes(n)?;
                let v = self.long_from_le(b)?;
                self.stack.push(v);
            }
            op::LONG4 => {
                let n = self.u32()? as i32;
                if n < 0 {
                    return corrupt("pickle: negative LONG4 length");
                }
                let b = self.len_bytes(n as u64)?;
                let v = self.long_from_le(b)?;
                self.stack.push(v);
            }
            op::BINFLOAT => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                self.stack.push(PyValue::Float(f64::from_be_bytes(a)));
            }
            op::FLOAT => {
                let line = self.line()?;
                let f = std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .ok_or_else(|| Fault::Corrupt("pickle: bad FLOAT text".into()))?;
                self.stack.push(PyValue::Float(f));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Text and bytes: str (UTF-8 and raw-unicode-escape), Python 2 str, bytes and bytearray. Returns whether `code` is one of them.
    fn text(&mut self, code: u8) -> PResult<bool> {
        match code {
            op::SHORT_BINUNICODE => {
                let n = self.u8()? as u64;
                let b = self.len_bytes(n)?;
                let v = self.utf8(b)?;
                self.stack.push(v);
            }
            op::BINUNICODE => {
                let n = self.u32()? as u64;
                let b = self.len_bytes(n)?;
                let v = self.utf8(b)?;
                self.stack.push(v);
            }
            op::BINUNICODE8 => {
                let n = self.u64()?;
                let b = self.len_bytes(n)?;
                let v = self.utf8(b)?;
                self.stack.push(v);
            }
            op::UNICODE => {
                // raw-unicode-escape; \uXXXX escapes are decoded, the rest taken as is.
                let line = self.line()?;
                let s = decode_raw_unicode_escape(line);
                let v = self.str_obj(s)?;
                self.stack.push(v);
            }
            op::SHORT_BINSTRING => {
                let n = self.u8()? as u64;
                let b = self.len_bytes(n)?;
                let v = self.py2str(b)?;
                self.stack.push(v);
            }
            op::BINSTRING => {
                let n = self.u32()? as i32;
                if n < 0 {
                    return corrupt("pickle: negative BINSTRING length");
                }
                let b = self.len_bytes(n as u64)?;
                let v = self.py2str(b)?;
                self.stack.push(v);
            }
            op::STRING => {
                let line = self.line()?;
                let t = line.strip_suffix(b"\r").unwrap_or(line);
                let inner = if t.len() >= 2 && (t[0] == b'\'' || t[0] == b'"') && t[t.len() - 1] == t[0] {
                    &t[1..t.len() - 1]
                } else {
                    return corrupt("pickle: STRING argument is not quoted");
                };
                let v = self.py2str(inner)?;
                self.stack.push(v);
            }
            op::SHORT_BINBYTES => {
                let n = self.u8()? as u64;
                let b = self.len_bytes(n)?;
                let v = self.alloc(Obj::Bytes(b.to_vec()))?;
                self.stack.push(v);
            }
            op::BINBYTES => {
                let n = self.u32()? as u64;
                let b = self.len_bytes(n)?;
                let v = self.alloc(Obj::Bytes(b.to_vec()))?;
                self.stack.push(v);
            }
            op::BINBYTES8 | op::BYTEARRAY8 => {
                let n = self.u64()?;
                let b = self.len_bytes(n)?;
                let v = self.alloc(Obj::Bytes(b.to_vec()))?;
                self.stack.push(v);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Containers: tuples, lists, dicts and sets, built whole or filled item by item. Returns whether `code` is one of them.
    fn container(&mut self, code: u8) -> PResult<bool> {
        match code {
            op::EMPTY_TUPLE => {
                let v = self.alloc(Obj::Tuple(Vec::new()))?;
                self.stack.push(v);
            }
            op::TUPLE => {
                let items = self.pop_mark()?;
                let v = self.alloc(Obj::Tuple(items))?;
                self.stack.push(v);
            }
            op::TUPLE1..=op::TUPLE3 => {
                let n = (code - op::TUPLE1 + 1) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                let v = self.alloc(Obj::Tuple(items))?;
                self.stack.push(v);
            }
            op::EMPTY_LIST => {
                let v = self.alloc(Obj::List(Vec::new()))?;
                self.stack.push(v);
            }
            op::LIST => {
                let items = self.pop_mark()?;
                let v = self.alloc(Obj::List(items))?;
                self.stack.push(v);
            }
            op::EMPTY_DICT => {
                let v = self.alloc(Obj::Dict(Vec::new()))?;
                self.stack.push(v);
            }
            op::DICT => {
                let items = self.pop_mark()?;
                let pairs = pairs_of(items)?;
                let v = self.alloc(Obj::Dict(pairs))?;
                self.stack.push(v);
            }
            op::EMPTY_SET => {
                let v = self.alloc(Obj::Set(Vec::new()))?;
                self.stack.push(v);
            }
            op::FROZENSET => {
                let items = self.pop_mark()?;
                let v = self.alloc(Obj::Set(items))?;
                self.stack.push(v);
            }
            op::APPEND => {
                let item = self.pop()?;
                let target = self.top()?;
                self.extend(target, vec![item])?;
            }
            op::APPENDS | op::ADDITEMS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.extend(target, items)?;
            }
            op::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                let target = self.top()?;
                self.set_items(target, vec![(key, value)])?;
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                let pairs = pairs_of(items)?;
                let target = self.top()?;
                self.set_items(target, pairs)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The memo: `PUT`s store the top of the stack under an index, `GET`s push it back. Returns whether `code` is one of them.
    fn memo_op(&mut self, code: u8) -> PResult<bool> {
        match code {
            op::PUT => {
                let line = self.line()?;
                let idx = std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    .ok_or_else(|| Fault::Corrupt("pickle: bad PUT index".into()))?;
                self.memo_put(idx)?;
            }
            op::BINPUT => {
                let i = self.u8()? as u32;
                self.memo_put(i)?;
            }
            op::LONG_BINPUT => {
                let i = self.u32()?;
                self.memo_put(i)?;
            }
            op::MEMOIZE => {
                let i = u32::try_from(self.memo.len()).map_err(|_| Fault::Corrupt("memo overflow".into()))?;
                self.memo_put(i)?;
            }
            op::GET => {
                let line = self.line()?;
                let idx = std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    .ok_or_else(|| Fault::Corrupt("pickle: bad GET index".into()))?;
                self.memo_get(idx)?;
            }
            op::BINGET => {
                let i = self.u8()? as u32;
                self.memo_get(i)?;
            }
            op::LONG_BINGET => {
                let i = self.u32()?;
                self.memo_get(i)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Objects: globals (named, never imported), calls (only the whitelisted rebuilds run; see [`Self::call`]), `BUILD` state, and persistent ids (storages). Returns whether `code` is one of them.
    fn object(&mut self, code: u8) -> PResult<bool> {
        match code {
            op::GLOBAL => {
                let module = String::from_utf8_lossy(self.line()?).into_owned();
                let name = String::from_utf8_lossy(self.line()?).into_owned();
                let v = self.alloc(Obj::Global { module, name })?;
                self.stack.push(v);
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(m), Some(n)) = (self.str_of(module), self.str_of(name)) else {
                    return corrupt("pickle: STACK_GLOBAL operands are not strings");
                };
                let v = self.alloc(Obj::Global { module: m, name: n })?;
                self.stack.push(v);
            }
            op::REDUCE => {
                let args = self.pop()?;
                let func = self.pop()?;
                let v = self.call(func, args, 0)?;
                self.stack.push(v);
            }
            op::NEWOBJ => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let v = self.call(cls, args, 0)?;
                self.stack.push(v);
            }
            op::NEWOBJ_EX => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let v = self.call(cls, args, 0)?;
                self.stack.push(v);
            }
            op::INST => {
                // INST: module, name lines; args from mark. Recorded, never executed.
                let module = String::from_utf8_lossy(self.line()?).into_owned();
                let name = String::from_utf8_lossy(self.line()?).into_owned();
                let items = self.pop_mark()?;
                let args = self.alloc(Obj::Tuple(items))?;
                let v = self.alloc(Obj::Object { class: format!("{module}.{name}"), args: Some(args), state: None })?;
                self.stack.push(v);
            }
            op::OBJ => {
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return corrupt("pickle: OBJ without class");
                }
                let cls = items.remove(0);
                let args = self.alloc(Obj::Tuple(items))?;
                let v = self.call(cls, args, 0)?;
                self.stack.push(v);
            }
            op::BUILD => {
                let state = self.pop()?;
                let target = self.top()?;
                if let PyValue::Ref(i) = target {
                    if let Some(Obj::Object { state: s, .. }) = self.arena.get_mut(i as usize) {
                        *s = Some(state);
                    }
                }
                // BUILD on dicts (OrderedDict `_metadata`), tensors (Python attributes) and
                // scalars is ignored: it only sets attributes.
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                let v = self.persistent_load(pid)?;
                self.stack.push(v);
            }
            op::PERSID => {
                let line = self.line()?;
                let pid = self.utf8(line)?;
                let v = self.persistent_load(pid)?;
                self.stack.push(v);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn str_of(&self, v: PyValue) -> Option<String> {
        match v {
            PyValue::Ref(i) => match self.arena.get(i as usize) {
                Some(Obj::Str(s)) => {
                    self.charge(s.len());
                    Some(s.clone())
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn extend(&mut self, target: PyValue, items: Vec<PyValue>) -> PResult<()> {
        match target {
            PyValue::Ref(i) => match self.arena.get_mut(i as usize) {
                Some(Obj::List(l)) | Some(Obj::Set(l)) => {
                    l.extend(items);
                    Ok(())
                }
                // Appending to an opaque object (a list subclass) keeps nothing.
                Some(Obj::Object { .. }) => Ok(()),
                _ => corrupt("pickle: APPEND(S)/ADDITEMS target is not a list or set"),
            },
            _ => corrupt("pickle: APPEND(S) target is not a list"),
        }
    }

    fn set_items(&mut self, target: PyValue, pairs: Vec<(PyValue, PyValue)>) -> PResult<()> {
        match target {
            PyValue::Ref(i) => match self.arena.get_mut(i as usize) {
                Some(Obj::Dict(d)) => {
                    d.extend(pairs);
                    Ok(())
                }
                Some(Obj::Object { .. }) => Ok(()),
                _ => corrupt("pickle: SETITEM(S) target is not a dict"),
            },
            _ => corrupt("pickle: SETITEM(S) target is not a dict"),
        }
    }

    fn global_name(&self, v: PyValue) -> Option<(String, String)> {
        match v {
            PyValue::Ref(i) => match self.arena.get(i as usize) {
                Some(Obj::Global { module, name }) => {
                    self.charge(module.len() + name.len());
                    Some((module.clone(), name.clone()))
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn tuple_items(&self, v: PyValue) -> Option<Vec<PyValue>> {
        match v {
            PyValue::Ref(i) => match self.arena.get(i as usize) {
                Some(Obj::Tuple(t)) | Some(Obj::List(t)) => {
                    self.charge(t.len() * std::mem::size_of::<PyValue>());
                    Some(t.clone())
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn uint(v: PyValue, what: &str) -> PResult<u64> {
        match v {
            PyValue::Int(i) if i >= 0 => Ok(i as u64),
            PyValue::Bool(b) => Ok(b as u64),
            _ => corrupt(format!("pickle: {what} is not a non-negative integer")),
        }
    }

    fn uints(&self, v: PyValue, what: &str) -> PResult<Vec<u64>> {
        let items = self.tuple_items(v).ok_or_else(|| Fault::Corrupt(format!("pickle: {what} is not a tuple")))?;
        if items.len() > MAX_DIMS {
            return corrupt(format!("pickle: {what} has {} dimensions", items.len()));
        }
        items.into_iter().map(|x| Self::uint(x, what)).collect()
    }

    /// Applies a callable. Whitelisted rebuild functions are re-implemented as data
    /// construction; anything else becomes an opaque, never-executed [`Obj::Object`].
    fn call(&mut self, func: PyValue, args: PyValue, depth: u32) -> PResult<PyValue> {
        let Some((module, name)) = self.global_name(func) else {
            // Calling something that is not a global (e.g. an opaque object): record it.
            return self.alloc(Obj::Object { class: "<non-global callable>".into(), args: Some(args), state: None });
        };
        let a = self.tuple_items(args).unwrap_or_default();
        match (module.as_str(), name.as_str()) {
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") if a.len() >= 4 => {
                let storage = match a[0] {
                    PyValue::Ref(i) if matches!(self.arena.get(i as usize), Some(Obj::Storage(_))) => i,
                    _ => return corrupt(format!("pickle: {name} called without a storage")),
                };
                let offset = Self::uint(a[1], "storage offset")?;
                let shape = self.uints(a[2], "tensor size")?;
                let stride = self.uints(a[3], "tensor stride")?;
                if shape.len() != stride.len() {
                    return corrupt(format!("pickle: tensor size has {} dims but stride has {}", shape.len(), stride.len()));
                }
                self.alloc(Obj::Tensor(TensorRef { storage, offset, shape, stride }))
            }
            ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") | ("torch.nn.parameter", "Parameter")
                if !a.is_empty() =>
            {
                Ok(a[0])
            }
            ("torch._tensor", "_rebuild_from_type_v2") | ("torch._tensor", "_rebuild_from_type") if a.len() >= 3 => {
                let inner_ok = matches!(
                    self.global_name(a[1]).as_ref().map(|(m, n)| (m.as_str(), n.as_str())),
                    Some(("torch", "Tensor")) | Some(("torch.nn.parameter", "Parameter")) | Some(("torch._tensor", "Tensor"))
                );
                if inner_ok && depth < 4 {
                    self.call(a[0], a[2], depth + 1)
                } else {
                    let class = self.global_name(a[1]).map(|(m, n)| format!("{m}.{n}")).unwrap_or_else(|| "<tensor subclass>".into());
                    self.alloc(Obj::Object { class, args: Some(args), state: None })
                }
            }
            ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => {
                let mut pairs = Vec::new();
                if let Some(&first) = a.first() {
                    if let Some(items) = self.tuple_items(first) {
                        for it in items {
                            match self.tuple_items(it).as_deref() {
                                Some([k, v]) => pairs.push((*k, *v)),
                                _ => return corrupt("pickle: OrderedDict item is not a pair"),
                            }
                        }
                    }
                }
                self.alloc(Obj::Dict(pairs))
            }
            ("builtins", "set") | ("__builtin__", "set") | ("builtins", "frozenset") | ("__builtin__", "frozenset") => {
                let items = a.first().and_then(|&x| self.tuple_items(x)).unwrap_or_default();
                self.alloc(Obj::Set(items))
            }
            ("builtins", "list") | ("__builtin__", "list") => {
                let items = a.first().and_then(|&x| self.tuple_items(x)).unwrap_or_default();
                self.alloc(Obj::List(items))
            }
            ("torch", "Size") | ("builtins", "tuple") | ("__builtin__", "tuple") => {
                let items = a.first().and_then(|&x| self.tuple_items(x)).unwrap_or_default();
                self.alloc(Obj::Tuple(items))
            }
            ("_codecs", "encode") if !a.is_empty() => {
                // Protocol-2 pickles of Python 3 bytes: _codecs.encode(str, "latin1").
                let s = self.str_of(a[0]).ok_or_else(|| Fault::Corrupt("pickle: _codecs.encode of a non-string".into()))?;
                let enc = a.get(1).and_then(|&e| self.str_of(e)).unwrap_or_else(|| "utf-8".into());
                let bytes = if enc.eq_ignore_ascii_case("latin1") || enc.eq_ignore_ascii_case("latin-1") {
                    let mut out = Vec::with_capacity(s.len());
                    for c in s.chars() {
                        let c = u32::from(c);
                        if c > 0xff {
                            return corrupt("pickle: _codecs.encode latin1 of a non-latin1 string");
                        }
                        out.push(c as u8);
                    }
                    out
                } else {
                    s.into_bytes()
                };
                self.alloc(Obj::Bytes(bytes))
            }
            ("builtins", "bytearray") | ("builtins", "bytes") | ("__builtin__", "bytearray") => {
                let b = match a.first().and_then(|&x| match x {
                    PyValue::Ref(i) => self.arena.get(i as usize),
                    _ => None,
                }) {
                    Some(Obj::Bytes(b)) => {
                        self.charge(b.len());
                        b.clone()
                    }
                    Some(Obj::Str(s)) => {
                        self.charge(s.len());
                        s.clone().into_bytes()
                    }
                    _ => Vec::new(),
                };
                self.alloc(Obj::Bytes(b))
            }
            ("torch", "device") => {
                let mut s = a.first().and_then(|&x| self.str_of(x)).unwrap_or_default();
                if let Some(PyValue::Int(i)) = a.get(1) {
                    s = format!("{s}:{i}");
                }
                self.str_obj(s)
            }
            ("numpy.core.multiarray", "scalar") | ("numpy._core.multiarray", "scalar") if a.len() >= 2 => self.numpy_scalar(a[0], a[1], args),
            _ => self.alloc(Obj::Object { class: format!("{module}.{name}"), args: Some(args), state: None }),
        }
    }

    /// `numpy.core.multiarray.scalar(dtype, bytes)`: numeric scalars only (as saved by
    /// `torch.save({"acc": np.float64(...)})`).
    fn numpy_scalar(&mut self, dtype: PyValue, bytes: PyValue, args: PyValue) -> PResult<PyValue> {
        let code = match dtype {
            PyValue::Ref(i) => match self.arena.get(i as usize) {
                Some(Obj::Object { class, args: Some(da), .. }) if class.ends_with("numpy.dtype") => {
                    self.tuple_items(*da).and_then(|t| t.first().and_then(|&c| self.str_of(c)))
                }
                _ => None,
            },
            _ => None,
        };
        let raw = match bytes {
            PyValue::Ref(i) => match self.arena.get(i as usize) {
                Some(Obj::Bytes(b)) => {
                    self.charge(b.len());
                    Some(b.clone())
                }
                Some(Obj::Str(s)) => s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect::<Option<Vec<u8>>>(),
                _ => None,
            },
            _ => None,
        };
        let v = match (code.as_deref(), raw.as_deref()) {
            (Some("f8"), Some(b)) if b.len() == 8 => {
                let mut x = [0u8; 8];
                x.copy_from_slice(b);
                Some(PyValue::Float(f64::from_le_bytes(x)))
            }
            (Some("f4"), Some(b)) if b.len() == 4 => Some(PyValue::Float(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)),
            (Some("i8"), Some(b)) if b.len() == 8 => {
                let mut x = [0u8; 8];
                x.copy_from_slice(b);
                Some(PyValue::Int(i64::from_le_bytes(x)))
            }
            (Some("i4"), Some(b)) if b.len() == 4 => Some(PyValue::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)),
            (Some("b1"), Some(b)) if b.len() == 1 => Some(PyValue::Bool(b[0] != 0)),
            _ => None,
        };
        match v {
            Some(v) => Ok(v),
            None => self.alloc(Obj::Object { class: "numpy.core.multiarray.scalar".into(), args: Some(args), state: None }),
        }
    }

    /// PyTorch's `persistent_load`, as data: `('storage', type, key, location, numel[, view])`
    /// becomes a [`StorageRef`]; `('module', cls, file, source)` (legacy whole-module saves)
    /// yields the class reference.
    fn persistent_load(&mut self, pid: PyValue) -> PResult<PyValue> {
        let items =
            self.tuple_items(pid).ok_or_else(|| Fault::Unsupported("pickle persistent id that is not a tuple (not a PyTorch file?)".into()))?;
        let kind = items.first().and_then(|&k| self.str_of(k)).unwrap_or_default();
        match kind.as_str() {
            "storage" if items.len() >= 5 => {
                let (tmod, tname) =
                    self.global_name(items[1]).ok_or_else(|| Fault::Corrupt("pickle: storage type is not a class reference".into()))?;
                let key = match items[2] {
                    PyValue::Int(i) => i.to_string(),
                    k => self.str_of(k).ok_or_else(|| Fault::Corrupt("pickle: storage key is not a string".into()))?,
                };
                let numel = Self::uint(items[4], "storage size")?;
                let view = match items.get(5) {
                    None | Some(PyValue::None) => None,
                    Some(&vm) => {
                        let t = self.tuple_items(vm).unwrap_or_default();
                        if t.len() != 3 {
                            return corrupt("pickle: storage view metadata is not (key, offset, size)");
                        }
                        Some((Self::uint(t[1], "storage view offset")?, Self::uint(t[2], "storage view size")?))
                    }
                };
                let dtype = storage_dtype(&tmod, &tname);
                self.alloc(Obj::Storage(StorageRef { key, dtype, type_name: format!("{tmod}.{tname}"), numel, view }))
            }
            "module" if items.len() >= 2 => Ok(items[1]),
            _ => Err(Fault::Unsupported(format!("pickle persistent id of kind {kind:?}"))),
        }
    }
}

fn pairs_of(items: Vec<PyValue>) -> PResult<Vec<(PyValue, PyValue)>> {
    if !items.len().is_multiple_of(2) {
        return corrupt("pickle: odd number of items for a dict");
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn decode_raw_unicode_escape(b: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 5 < b.len() && b[i + 1] == b'u' {
            if let Some(c) = std::str::from_utf8(&b[i + 2..i + 6]).ok().and_then(|h| u32::from_str_radix(h, 16).ok()).and_then(char::from_u32) {
                out.push(c);
                i += 6;
                continue;
            }
        }
        out.push(char::from(b[i]));
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dict_of_scalars() {
        // pickle.dumps({'a': 1, 'b': [1.5, 'x']}, protocol=2)
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(G?\xf8\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x04eu.";
        let pk = parse(p).unwrap();
        let d = pk.dict(pk.root).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(pk.str(d[0].0), Some("a"));
        assert_eq!(d[0].1, PyValue::Int(1));
        let l = pk.seq(d[1].1).unwrap();
        assert_eq!(l[0], PyValue::Float(1.5));
        assert_eq!(pk.str(l[1]), Some("x"));
        assert_eq!(pk.consumed, p.len());
    }

    #[test]
    fn unknown_callable_is_recorded_not_run() {
        // pickle.dumps(os.system, ...) style: GLOBAL posix system, args ('echo',), REDUCE
        let p = b"cposix\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03.";
        let pk = parse(p).unwrap();
        match pk.obj(pk.root) {
            Some(Obj::Object { class, .. }) => assert_eq!(class, "posix.system"),
            other => panic!("expected opaque object, got {other:?}"),
        }
    }

    #[test]
    fn truncated_and_garbage_inputs_fail_cleanly() {
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u.";
        for n in 0..p.len() {
            assert!(parse(&p[..n]).is_err(), "prefix of {n} bytes parsed");
        }
        assert!(parse(b"X\xff\xff\xff\xff").is_err());
        assert!(parse(b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
        assert!(parse(b"h\x07.").is_err());
        assert!(parse(b"0.").is_err());
    }

    /// A pickle that memoises a list of `items` Nones, then copies it `copies` times with
    /// `list(l)`, and returns None.
    fn list_copied(items: usize, copies: usize) -> Vec<u8> {
        let mut p = b"]q\x00(".to_vec();
        p.extend(std::iter::repeat_n(b'N', items));
        p.extend_from_slice(b"e0");
        for _ in 0..copies {
            p.extend_from_slice(b"c__builtin__\nlist\nh\x00\x85R0");
        }
        p.extend_from_slice(b"N.");
        p
    }

    #[test]
    fn repeated_copies_of_a_shared_list_are_bounded() {
        // A 100k-item list, memoised, then handed to OrderedDict-like copies 100k times.
        let p = list_copied(100_000, 100_000);
        let e = parse(&p).err().expect("bomb refused");
        assert!(matches!(&e, Fault::Corrupt(m) if m.contains("pickle bomb")), "{e:?}");
    }

    /// A MARK with nothing after it gives an empty tuple/list; a MARK left above the stack top (its
    /// items popped) is an error, never a panic.
    #[test]
    fn empty_and_dangling_marks() {
        for p in [&b"(t."[..], b"(l.", b"\x80\x02(t."] {
            let pk = parse(p).unwrap_or_else(|e| panic!("{p:?}: {e:?}"));
            assert_eq!(pk.seq(pk.root).map(|s| s.len()), Some(0), "{p:?}");
        }
        assert!(parse(b"N(0t.").is_err());
    }

    /// The copy budget has a 16 MiB floor: a small file may legitimately copy far more than 16x its
    /// size (here ~1.6 MB of copies from a ~2.6 kB pickle), and must parse.
    #[test]
    fn copies_below_the_floor_of_the_budget_are_allowed() {
        let p = list_copied(1000, 100);
        assert!(p.len() < 4000);
        let pk = parse(&p).unwrap_or_else(|e| panic!("legitimate copies refused: {e:?}"));
        assert_eq!(pk.root, PyValue::None);
        assert_eq!(pk.consumed, p.len());
    }

    #[test]
    fn deep_nesting_does_not_overflow_on_drop() {
        let mut p = Vec::new();
        p.extend(std::iter::repeat_n(b'(', 200_000));
        p.push(b')');
        p.extend(std::iter::repeat_n(b't', 200_000));
        p.push(b'.');
        let pk = parse(&p).unwrap();
        drop(pk);
    }

    /// The message of a refused pickle.
    fn refusal(p: &[u8]) -> String {
        match parse(p) {
            Err(Fault::Corrupt(m)) | Err(Fault::Unsupported(m)) => m,
            Ok(pk) => panic!("{p:?} parsed to {:?}", pk.root),
        }
    }

    /// Integers in every encoding: LONG1 little-endian two's complement (sign from the last
    /// byte's top bit), LONG4 with lengths 0 and negative, protocol 0/1 text INT and LONG with
    /// Python 2's `I00`/`I01` booleans, big values and bad literals.
    #[test]
    fn integers_of_every_opcode() {
        let root = |p: &[u8]| parse(p).unwrap_or_else(|e| panic!("{p:?}: {e:?}")).root;
        assert_eq!(root(b"\x8a\x00."), PyValue::Int(0));
        assert_eq!(root(b"\x8a\x01\xff."), PyValue::Int(-1));
        assert_eq!(root(b"\x8a\x02\xff\x00."), PyValue::Int(255));
        assert_eq!(root(b"\x8a\x02\x00\x80."), PyValue::Int(-32768));
        assert_eq!(root(b"\x8a\x03\x01\x02\x03."), PyValue::Int(0x030201));
        assert_eq!(root(b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80."), PyValue::Int(i64::MIN));
        let big = parse(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").unwrap();
        assert!(matches!(big.obj(big.root), Some(Obj::BigInt(b)) if b.len() == 9));
        assert_eq!(root(b"\x8b\x00\x00\x00\x00."), PyValue::Int(0));
        assert_eq!(root(b"\x8b\x01\x00\x00\x00\x05."), PyValue::Int(5));
        assert!(refusal(b"\x8b\xff\xff\xff\xff.").contains("negative LONG4 length"));

        assert_eq!(root(b"I00\n."), PyValue::Bool(false));
        assert_eq!(root(b"I01\n."), PyValue::Bool(true));
        assert_eq!(root(b"I0\n."), PyValue::Int(0));
        assert_eq!(root(b"I-42\n."), PyValue::Int(-42));
        assert_eq!(root(b"L123L\n."), PyValue::Int(123));
        for p in [&b"I99999999999999999999\n."[..], b"L-99999999999999999999L\n."] {
            let pk = parse(p).unwrap();
            assert!(matches!(pk.obj(pk.root), Some(Obj::BigInt(_))), "{p:?}");
        }
        for p in [&b"I\n."[..], b"I12a\n.", b"Iabc\n.", b"I-\n."] {
            assert!(refusal(p).contains("bad integer literal"), "{p:?}");
        }
    }

    /// Protocols 0 to 5 are read, a newer one is refused by number.
    #[test]
    fn protocol_numbers() {
        for v in 0..=5u8 {
            assert_eq!(parse(&[0x80, v, b'N', b'.']).map(|p| p.root).ok(), Some(PyValue::None), "protocol {v}");
        }
        let msg = refusal(b"\x80\x06N.");
        assert!(msg.contains("pickle protocol 6"), "{msg}");
    }

    /// Python 2 strings: BINSTRING with lengths 0, n and negative; text STRING quoted with either
    /// quote, empty, and every malformed quoting refused.
    #[test]
    fn python2_strings() {
        let text = |p: &[u8]| {
            let pk = parse(p).unwrap_or_else(|e| panic!("{p:?}: {e:?}"));
            pk.str(pk.root).map(str::to_owned).unwrap_or_else(|| panic!("{p:?}: not a str"))
        };
        assert_eq!(text(b"T\x00\x00\x00\x00."), "");
        assert_eq!(text(b"T\x02\x00\x00\x00hi."), "hi");
        assert!(refusal(b"T\xff\xff\xff\xff.").contains("negative BINSTRING length"));
        assert_eq!(text(b"S'abc'\n."), "abc");
        assert_eq!(text(b"S\"x y\"\r\n."), "x y");
        assert_eq!(text(b"S''\n."), "");
        for p in [&b"S'\n."[..], b"S'abc\"\n.", b"Sabc\n.", b"Sxax\n.", b"S\n."] {
            assert!(refusal(p).contains("STRING argument is not quoted"), "{p:?}");
        }
    }

    /// APPENDS and SETITEMS on an object of an unknown class (a list or dict subclass) keep
    /// nothing and are not an error; on a non-container they are.
    #[test]
    fn items_added_to_opaque_objects_are_dropped() {
        for p in [&b"c__main__\nMyList\n)R(K\x01K\x02e."[..], b"c__main__\nMyDict\n)R(K\x01K\x02u."] {
            let pk = parse(p).unwrap_or_else(|e| panic!("{p:?}: {e:?}"));
            assert!(matches!(pk.obj(pk.root), Some(Obj::Object { class, .. }) if class.starts_with("__main__.My")), "{p:?}");
        }
        assert!(refusal(b"X\x01\x00\x00\x00a(K\x01e.").contains("not a list or set"));
        assert!(refusal(b"X\x01\x00\x00\x00a(K\x01K\x02u.").contains("not a dict"));
    }

    /// The copy budget charges what is copied: a global's name by its length (two calls of a global
    /// with 4000-byte module and name parse), an argument tuple by its items (a 100k-item list
    /// copied 20 times, 32 MB from a 100 kB pickle, is over the 16x + 16 MiB budget).
    #[test]
    fn copies_are_charged_by_their_size() {
        let long = "m".repeat(4000);
        let mut p = format!("c{long}\n{long}\nq\x00").into_bytes();
        p.extend_from_slice(b")Rh\x00)R0.");
        let pk = parse(&p).unwrap_or_else(|e| panic!("long global names: {e:?}"));
        assert!(matches!(pk.obj(pk.root), Some(Obj::Object { class, .. }) if class.len() == 8001));

        let msg = refusal(&list_copied(100_000, 20));
        assert!(msg.contains("pickle bomb"), "{msg}");
    }

    /// Sizes and strides: non-negative ints and Python 2 booleans are read, a negative int is
    /// refused, and up to 64 dimensions are accepted.
    #[test]
    fn sizes_are_non_negative_and_at_most_64_dims() {
        assert!(matches!(Vm::uint(PyValue::Bool(true), "size"), Ok(1)));
        assert!(matches!(Vm::uint(PyValue::Int(7), "size"), Ok(7)));
        assert!(matches!(Vm::uint(PyValue::Int(-1), "size"), Err(Fault::Corrupt(m)) if m.contains("size is not a non-negative integer")));
        let mut vm = Vm {
            data: b"",
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            arena: Vec::new(),
            copied: Cell::new(0),
            copy_limit: u64::MAX,
        };
        let max = vm.alloc(Obj::Tuple(vec![PyValue::Int(1); MAX_DIMS])).unwrap();
        assert_eq!(vm.uints(max, "tensor size").ok().map(|d| d.len()), Some(MAX_DIMS));
        let over = vm.alloc(Obj::Tuple(vec![PyValue::Int(1); MAX_DIMS + 1])).unwrap();
        assert!(matches!(vm.uints(over, "tensor size"), Err(Fault::Corrupt(m)) if m.contains("65 dimensions")));
    }

    /// The whitelisted builtins build their data: set/frozenset, tuple/torch.Size, bytes/bytearray.
    #[test]
    fn builtin_constructors_build_data() {
        for (global, want) in [("__builtin__\nset", "set"), ("builtins\nfrozenset", "set"), ("torch\nSize", "tuple"), ("__builtin__\ntuple", "tuple")]
        {
            let mut bytes = format!("c{global}\n]q\x00(K\x01K\x02e").into_bytes();
            bytes.extend_from_slice(b"\x85R."); // TUPLE1, REDUCE, STOP
            let pk = parse(&bytes).unwrap_or_else(|e| panic!("{global}: {e:?}"));
            let got = match pk.obj(pk.root) {
                Some(Obj::Set(x)) => ("set", x.clone()),
                Some(Obj::Tuple(x)) => ("tuple", x.clone()),
                other => panic!("{global}: {other:?}"),
            };
            assert_eq!(got, (want, vec![PyValue::Int(1), PyValue::Int(2)]), "{global}");
        }
        for p in [&b"c__builtin__\nbytearray\nX\x03\x00\x00\x00abc\x85R."[..], b"cbuiltins\nbytes\nC\x03abc\x85R."] {
            let pk = parse(p).unwrap_or_else(|e| panic!("{p:?}: {e:?}"));
            assert!(matches!(pk.obj(pk.root), Some(Obj::Bytes(b)) if b == b"abc"), "{p:?}");
        }
    }

    /// Every whitelisted callable called with too few arguments (none, one, two) gives a value or
    /// a clean error, never a panic (an index past the arguments).
    #[test]
    fn whitelisted_calls_with_too_few_arguments_do_not_panic() {
        let globals = [
            "torch._utils\n_rebuild_tensor_v2",
            "torch._utils\n_rebuild_tensor",
            "torch._utils\n_rebuild_parameter",
            "torch._utils\n_rebuild_parameter_with_state",
            "torch.nn.parameter\nParameter",
            "torch._tensor\n_rebuild_from_type_v2",
            "torch._tensor\n_rebuild_from_type",
            "collections\nOrderedDict",
            "builtins\nset",
            "builtins\nlist",
            "torch\nSize",
            "_codecs\nencode",
            "builtins\nbytearray",
            "torch\ndevice",
            "numpy.core.multiarray\nscalar",
            "numpy._core.multiarray\nscalar",
        ];
        for g in globals {
            for args in [&b")"[..], b"K\x01\x85", b"K\x01K\x02\x86"] {
                let mut p = format!("c{g}\n").into_bytes();
                p.extend_from_slice(args);
                p.extend_from_slice(b"R.");
                let r = std::panic::catch_unwind(|| parse(&p).map(|pk| pk.root));
                assert!(r.is_ok(), "{g:?} with {args:?} panicked");
            }
        }
    }

    /// `OrderedDict([(k, v), ...])`, `_codecs.encode(s, "latin1")` (how protocol 2 stores Python 3
    /// bytes: U+00FF is the last encodable character) and protocol 0's raw-unicode-escape `PyValue`
    /// strings (a `\uXXXX` escape up to the very end of the line).
    #[test]
    fn ordered_dicts_latin1_bytes_and_unicode_escapes() {
        let pk = parse(b"ccollections\nOrderedDict\n]((K\x01K\x02t(K\x03K\x04te\x85R.").unwrap();
        assert_eq!(pk.dict(pk.root), Some(&[(PyValue::Int(1), PyValue::Int(2)), (PyValue::Int(3), PyValue::Int(4))][..]));
        assert!(refusal(b"ccollections\nOrderedDict\n]((K\x01te\x85R.").contains("not a pair"));
        let pk = parse(b"c_codecs\nencode\nX\x03\x00\x00\x00a\xc3\xbfX\x06\x00\x00\x00latin1\x86R.").unwrap();
        assert!(matches!(pk.obj(pk.root), Some(Obj::Bytes(b)) if b == &[b'a', 0xff]));
        assert!(refusal(b"c_codecs\nencode\nX\x02\x00\x00\x00\xc4\x80X\x06\x00\x00\x00latin1\x86R.").contains("non-latin1"));
        for (line, want) in [(&b"Vab\\u00e9c\n."[..], "ab\u{e9}c"), (b"V\\u00e9\n.", "\u{e9}"), (b"Vx\\u00e\n.", "x\\u00e")] {
            let pk = parse(line).unwrap();
            assert_eq!(pk.str(pk.root), Some(want), "{line:?}");
        }
    }

    /// The value a whole `torch.save` pickle decodes to, by dict key.
    fn dict_entry(pk: &Pickle, key: &str) -> PyValue {
        let d = pk.dict(pk.root).unwrap_or_else(|| panic!("root is not a dict: {:?}", pk.obj(pk.root)));
        d.iter().find(|(k, _)| pk.str(*k) == Some(key)).unwrap_or_else(|| panic!("no {key:?}")).1
    }

    /// NumPy scalars as `torch.save` (protocol 2) writes them, bytes as `_codecs.encode(s, "latin1")`.
    #[test]
    fn numpy_scalars_saved_by_torch_decode_exactly() {
        // data.pkl of torch.save({'best_acc': numpy.float64(0.93), 'epoch': numpy.int64(7), 'x': numpy.float32(1.5),
        // 'n': numpy.int32(-3), 'ok': numpy.bool_(True), 'no': numpy.bool_(False)}, f), torch 2.13, numpy 2.4.6
        let p = b"\x80\x02}q\x00(X\x08\x00\x00\x00best_accq\x01cnumpy._core.multiarray\nscalar\nq\x02cnumpy\ndtype\nq\x03X\x02\x00\x00\x00f8q\x04\x89\x88\x87q\x05Rq\x06(K\x03X\x01\x00\x00\x00<q\x07NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x08bc_codecs\nencode\nq\tX\r\x00\x00\x00\xc3\x83\xc3\xb5(\\\xc2\x8f\xc3\x82\xc3\xad?q\nX\x06\x00\x00\x00latin1q\x0b\x86q\x0cRq\r\x86q\x0eRq\x0fX\x05\x00\x00\x00epochq\x10h\x02h\x03X\x02\x00\x00\x00i8q\x11\x89\x88\x87q\x12Rq\x13(K\x03h\x07NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x14bh\tX\x08\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00q\x15h\x0b\x86q\x16Rq\x17\x86q\x18Rq\x19X\x01\x00\x00\x00xq\x1ah\x02h\x03X\x02\x00\x00\x00f4q\x1b\x89\x88\x87q\x1cRq\x1d(K\x03h\x07NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x1ebh\tX\x05\x00\x00\x00\x00\x00\xc3\x80?q\x1fh\x0b\x86q Rq!\x86q\"Rq#X\x01\x00\x00\x00nq$h\x02h\x03X\x02\x00\x00\x00i4q%\x89\x88\x87q&Rq'(K\x03h\x07NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq(bh\tX\x08\x00\x00\x00\xc3\xbd\xc3\xbf\xc3\xbf\xc3\xbfq)h\x0b\x86q*Rq+\x86q,Rq-X\x02\x00\x00\x00okq.h\x02h\x03X\x02\x00\x00\x00b1q/\x89\x88\x87q0Rq1(K\x03X\x01\x00\x00\x00|q2NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq3bh\tX\x01\x00\x00\x00\x01q4h\x0b\x86q5Rq6\x86q7Rq8X\x02\x00\x00\x00noq9h\x02h1h\tX\x01\x00\x00\x00\x00q:h\x0b\x86q;Rq<\x86q=Rq>u.";
        let pk = parse(p).unwrap();
        assert_eq!(dict_entry(&pk, "best_acc"), PyValue::Float(0.93));
        assert_eq!(dict_entry(&pk, "epoch"), PyValue::Int(7));
        assert_eq!(dict_entry(&pk, "x"), PyValue::Float(1.5));
        assert_eq!(dict_entry(&pk, "n"), PyValue::Int(-3));
        assert_eq!(dict_entry(&pk, "ok"), PyValue::Bool(true));
        assert_eq!(dict_entry(&pk, "no"), PyValue::Bool(false));
        // Python 2's pickle.dumps(numpy.int64(7), 2) (numpy.core, the bytes as a SHORT_BINSTRING `str`):
        // Python 3's pickle.loads(p, encoding="latin1") gives numpy.int64(7).
        let pk = parse(b"cnumpy.core.multiarray\nscalar\ncnumpy\ndtype\nU\x02i8K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbU\x08\x07\x00\x00\x00\x00\x00\x00\x00\x86R.").unwrap();
        assert_eq!(pk.root, PyValue::Int(7));
    }

    /// `pickletools.optimize(pickle.dumps(x, protocol=3))` of a NumPy scalar, with any dtype class, code and bytes.
    fn numpy_scalar_pickle(dtype_class: &str, code: &str, raw: &[u8]) -> Vec<u8> {
        let mut p = b"\x80\x03".to_vec();
        p.extend_from_slice(format!("cnumpy._core.multiarray\nscalar\ncnumpy\n{dtype_class}\nX\x02\x00\x00\x00{code}").as_bytes());
        p.extend_from_slice(b"\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbC");
        p.push(u8::try_from(raw.len()).unwrap());
        p.extend_from_slice(raw);
        p.extend_from_slice(b"\x86R.");
        p
    }

    /// A scalar whose bytes do not fit its dtype, or whose dtype is not a `numpy.dtype`, stays an
    /// opaque object (never a panic, never a misread number).
    #[test]
    fn numpy_scalars_of_the_wrong_size_or_dtype_stay_opaque() {
        // The helper writes what Python writes: pickletools.optimize(pickle.dumps(numpy.float64(0.93), protocol=3)).
        let real = b"\x80\x03cnumpy._core.multiarray\nscalar\ncnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbC\x08\xc3\xf5(\\\x8f\xc2\xed?\x86R.";
        assert_eq!(numpy_scalar_pickle("dtype", "f8", &0.93f64.to_le_bytes()), real);
        let root = |p: &[u8]| parse(p).unwrap_or_else(|e| panic!("{p:?}: {e:?}")).root;
        assert_eq!(root(&numpy_scalar_pickle("dtype", "f4", &(-2.5f32).to_le_bytes())), PyValue::Float(-2.5));
        assert_eq!(root(&numpy_scalar_pickle("dtype", "i8", &(-1i64 << 40).to_le_bytes())), PyValue::Int(-1 << 40));
        assert_eq!(root(&numpy_scalar_pickle("dtype", "i4", &i32::MIN.to_le_bytes())), PyValue::Int(i32::MIN.into()));
        assert_eq!(root(&numpy_scalar_pickle("dtype", "b1", &[2])), PyValue::Bool(true));
        let cases: [(&str, &str, &[u8]); 9] = [
            ("ndarray", "f8", &[0; 8]),
            ("dtype", "f8", &[0; 4]),
            ("dtype", "f4", &[0; 2]),
            ("dtype", "f4", &[0; 8]),
            ("dtype", "i8", &[0; 4]),
            ("dtype", "i4", &[0; 2]),
            ("dtype", "i4", &[0; 8]),
            ("dtype", "b1", &[]),
            ("dtype", "b1", &[1, 0]),
        ];
        for (class, code, raw) in cases {
            let p = numpy_scalar_pickle(class, code, raw);
            let pk = std::panic::catch_unwind(|| parse(&p)).unwrap_or_else(|_| panic!("{class} {code} {raw:?} panicked")).unwrap();
            assert!(
                matches!(pk.obj(pk.root), Some(Obj::Object { class, .. }) if class == "numpy.core.multiarray.scalar"),
                "{class} {code} {raw:?}: {:?}",
                pk.root
            );
        }
    }

    /// `_rebuild_from_type_v2`: a plain tensor that carries Python attributes is rebuilt as the
    /// tensor; a subclass stays an opaque object of its class.
    #[test]
    fn tensors_rebuilt_through_rebuild_from_type() {
        // data.pkl of: t = torch.tensor([1.0, 2.0]); t.note = 'x'; torch.save(t, f)   (torch 2.13)
        let p = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\nq\x00(ctorch._utils\n_rebuild_tensor_v2\nq\x01ctorch\nTensor\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x02tq\x07QK\x00K\x02\x85q\x08K\x01\x85q\t\x89ccollections\nOrderedDict\nq\n)Rq\x0btq\x0c}q\rX\x04\x00\x00\x00noteq\x0eX\x01\x00\x00\x00xq\x0fstq\x10Rq\x11.";
        let pk = parse(p).unwrap();
        match pk.obj(pk.root) {
            Some(Obj::Tensor(t)) => {
                assert_eq!((t.offset, &t.shape[..], &t.stride[..]), (0, &[2][..], &[1][..]));
                assert!(matches!(&pk.arena[t.storage as usize], Obj::Storage(s) if s.key == "0" && s.numel == 2 && s.dtype == Some(DType::F32)));
            }
            other => panic!("{other:?}"),
        }
        // class Sub(torch.Tensor): pass; torch.save(torch.tensor([1.0, 2.0]).as_subclass(Sub), f)
        let p = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\nq\x00(ctorch._utils\n_rebuild_tensor_v2\nq\x01c__main__\nSub\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x02tq\x07QK\x00K\x02\x85q\x08K\x01\x85q\t\x89ccollections\nOrderedDict\nq\n)Rq\x0btq\x0cNtq\rRq\x0e.";
        let pk = parse(p).unwrap();
        assert!(matches!(pk.obj(pk.root), Some(Obj::Object { class, .. }) if class == "__main__.Sub"), "{:?}", pk.obj(pk.root));
    }

    /// `_rebuild_from_type_v2` nested `levels` deep (each level's function is the next level's
    /// `_rebuild_from_type_v2`) around `_rebuild_tensor_v2` of a 2-float storage.
    fn rebuild_from_type_nested(levels: usize) -> Vec<u8> {
        let storage = b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQ";
        let mut body = b"ctorch._utils\n_rebuild_tensor_v2\nctorch\nTensor\n(".to_vec();
        body.extend_from_slice(storage);
        body.extend_from_slice(b"K\x00K\x02\x85K\x01\x85t}");
        for _ in 1..levels {
            let mut outer = b"ctorch._tensor\n_rebuild_from_type_v2\nctorch\nTensor\n(".to_vec();
            outer.extend_from_slice(&body);
            outer.extend_from_slice(b"t}");
            body = outer;
        }
        let mut p = b"ctorch._tensor\n_rebuild_from_type_v2\n(".to_vec();
        p.extend_from_slice(&body);
        p.extend_from_slice(b"tR.");
        p
    }

    /// Nested `_rebuild_from_type_v2` calls are followed 4 deep; a fifth becomes an opaque object.
    #[test]
    fn rebuild_from_type_is_followed_four_levels_deep() {
        for levels in 1..=4 {
            let pk = parse(&rebuild_from_type_nested(levels)).unwrap();
            assert!(matches!(pk.obj(pk.root), Some(Obj::Tensor(t)) if t.shape == [2]), "{levels}: {:?}", pk.obj(pk.root));
        }
        for levels in [5, 6] {
            let pk = parse(&rebuild_from_type_nested(levels)).unwrap();
            assert!(matches!(pk.obj(pk.root), Some(Obj::Object { class, .. }) if class == "torch.Tensor"), "{levels}: {:?}", pk.obj(pk.root));
        }
    }

    /// Malformed arities: a tensor rebuilt from something that is not a storage, persistent ids
    /// with too few items: each a clear error.
    #[test]
    fn tensors_without_storage_and_short_persistent_ids_are_refused() {
        let m = refusal(b"ctorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x00sK\x00K\x02\x85K\x01\x85tR.");
        assert!(m.contains("_rebuild_tensor_v2 called without a storage"), "{m}");
        let m = refusal(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cputQ.");
        assert!(m.contains("persistent id of kind \"storage\""), "{m}");
        let m = refusal(b"(X\x06\x00\x00\x00moduletQ.");
        assert!(m.contains("persistent id of kind \"module\""), "{m}");
    }
}
