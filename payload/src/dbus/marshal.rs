//! Values on the D-Bus wire, read and written by a signature known only at run time, to and
//! from the JSON of Cockpit's `dbus-json3` (doc/protocol.md, "Payload: dbus-json3"):
//!
//! | D-Bus | JSON |
//! | --- | --- |
//! | `y n q i u x t d` | number (64-bit integers exact) |
//! | `b` | `true` / `false` |
//! | `s o g` | string |
//! | `ay` | base64 string (`""` for an empty array) |
//! | other arrays, structs | array |
//! | `a{KV}` | object; keys that are not strings as their JSON text (`"1"`, `"true"`) |
//! | `v` | `{"t": SIGNATURE, "v": VALUE}` |
//! | `h` | refused: this bridge passes no file descriptors |
//!
//! Reading never trusts a length before checking it against the bytes there are, and nesting
//! is bounded, so any input is either a value or a [`WireError`].

use serde_json::{Map, Number, Value};

use super::signature::{self, Type};

/// The longest array the specification allows, in bytes (64 MiB).
pub const MAX_ARRAY: usize = 1 << 26;
/// How deeply containers and variants may nest, in total (the specification's limit).
const MAX_DEPTH: usize = 64;

/// A JSON value that does not fit its D-Bus type: becomes an
/// `org.freedesktop.DBus.Error.InvalidArgs` error with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

/// Bytes that are not a valid D-Bus value of the type they should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid D-Bus data: {0}")]
pub struct WireError(pub &'static str);

fn bad(t: &Type, v: &Value) -> ValueError {
    let mut text = v.to_string();
    if text.len() > 64 {
        let mut end = 64;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    ValueError(format!("invalid value for type '{t}': {text}"))
}

/// Writes values, little-endian, aligned relative to the start of the buffer (which must sit on
/// an 8-byte boundary of the message, as a body and a header do).
#[derive(Default)]
pub struct Writer {
    /// What was written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Zero bytes up to the next multiple of `align`.
    pub fn pad(&mut self, align: usize) {
        while self.buf.len() % align != 0 {
            self.buf.push(0);
        }
    }

    /// A byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// A 32-bit unsigned integer.
    pub fn u32(&mut self, v: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.pad(8);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A string or object path (no check of its content).
    pub fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    /// A signature (at most 255 bytes; no check of its content).
    pub fn signature(&mut self, s: &str) {
        self.buf.push(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    /// Write the JSON values `args` as the types `types` (a message body).
    pub fn values(&mut self, types: &[Type], args: &[Value]) -> Result<(), ValueError> {
        if types.len() != args.len() {
            return Err(ValueError(format!(
                "signature '{}' takes {} arguments, got {}",
                signature::to_string(types),
                types.len(),
                args.len()
            )));
        }
        for (t, v) in types.iter().zip(args) {
            self.value(t, v, 0)?;
        }
        Ok(())
    }

    /// Write the JSON value `v` as type `t`.
    pub fn value(&mut self, t: &Type, v: &Value, depth: usize) -> Result<(), ValueError> {
        if depth > MAX_DEPTH {
            return Err(ValueError("value nested too deeply".into()));
        }
        match t {
            Type::Byte => {
                let n = int_in(t, v, 0, u8::MAX.into())?;
                self.u8(n as u8);
            }
            Type::Bool => match v {
                Value::Bool(b) => self.u32(u32::from(*b)),
                _ => return Err(bad(t, v)),
            },
            Type::Int16 => {
                let n = sint_in(t, v, i16::MIN.into(), i16::MAX.into())?;
                self.pad(2);
                self.buf.extend_from_slice(&(n as i16).to_le_bytes());
            }
            Type::Uint16 => {
                let n = int_in(t, v, 0, u16::MAX.into())?;
                self.pad(2);
                self.buf.extend_from_slice(&(n as u16).to_le_bytes());
            }
            Type::Int32 => {
                let n = sint_in(t, v, i32::MIN.into(), i32::MAX.into())?;
                self.u32(n as i32 as u32);
            }
            Type::Uint32 => {
                let n = int_in(t, v, 0, u32::MAX.into())?;
                self.u32(n as u32);
            }
            Type::Int64 => {
                let n = v.as_i64().ok_or_else(|| bad(t, v))?;
                self.u64(n as u64);
            }
            Type::Uint64 => {
                let n = v.as_u64().ok_or_else(|| bad(t, v))?;
                self.u64(n);
            }
            Type::Double => {
                let n = v.as_f64().ok_or_else(|| bad(t, v))?;
                self.u64(n.to_bits());
            }
            Type::String => {
                let s = v.as_str().filter(|s| !s.contains('\0'));
                self.string(s.ok_or_else(|| bad(t, v))?);
            }
            Type::ObjectPath => {
                let s = v.as_str().filter(|s| is_object_path(s));
                self.string(s.ok_or_else(|| bad(t, v))?);
            }
            Type::Signature => {
                let s = v.as_str().filter(|s| signature::parse(s).is_ok());
                self.signature(s.ok_or_else(|| bad(t, v))?);
            }
            Type::UnixFd => {
                return Err(ValueError(
                    "file descriptors ('h') are not supported".into(),
                ))
            }
            Type::Variant => {
                let (Some(Value::String(sig)), Some(inner)) = (v.get("t"), v.get("v")) else {
                    return Err(bad(t, v));
                };
                let inner_t =
                    signature::parse_single(sig).map_err(|e| ValueError(e.to_string()))?;
                self.signature(sig);
                self.value(&inner_t, inner, depth + 1)?;
            }
            Type::Array(elem) if **elem == Type::Byte => {
                let Value::String(text) = v else {
                    return Err(bad(t, v));
                };
                let bytes = base64_decode(text)
                    .ok_or_else(|| ValueError(format!("invalid base64 for type 'ay': {text:?}")))?;
                if bytes.len() > MAX_ARRAY {
                    return Err(ValueError("array too long".into()));
                }
                self.u32(bytes.len() as u32);
                self.buf.extend_from_slice(&bytes);
            }
            Type::Array(elem) => {
                let Value::Array(items) = v else {
                    return Err(bad(t, v));
                };
                let start = self.array_start(elem.alignment());
                for item in items {
                    self.value(elem, item, depth + 1)?;
                }
                self.array_end(start)?;
            }
            Type::Dict(key, value) => {
                let Value::Object(entries) = v else {
                    return Err(bad(t, v));
                };
                let start = self.array_start(8);
                for (k, item) in entries {
                    self.pad(8);
                    self.key(key, k)?;
                    self.value(value, item, depth + 1)?;
                }
                self.array_end(start)?;
            }
            Type::Struct(fields) => {
                let Value::Array(items) = v else {
                    return Err(bad(t, v));
                };
                if items.len() != fields.len() {
                    return Err(bad(t, v));
                }
                self.pad(8);
                for (f, item) in fields.iter().zip(items) {
                    self.value(f, item, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    /// A dict key from its JSON object key: strings as they are, others parsed as JSON.
    fn key(&mut self, t: &Type, k: &str) -> Result<(), ValueError> {
        match t {
            Type::String | Type::ObjectPath | Type::Signature => {
                self.value(t, &Value::String(k.to_owned()), 0)
            }
            _ => {
                let parsed: Value = serde_json::from_slice(k.as_bytes())
                    .map_err(|_| ValueError(format!("invalid key for type '{t}': {k:?}")))?;
                self.value(t, &parsed, 0)
            }
        }
    }

    /// The length word of an array and the padding to its first element; returns where the
    /// elements start (the length word is 4 bytes before the padding).
    fn array_start(&mut self, align: usize) -> (usize, usize) {
        self.u32(0);
        let len_at = self.buf.len() - 4;
        self.pad(align);
        (len_at, self.buf.len())
    }

    fn array_end(&mut self, (len_at, start): (usize, usize)) -> Result<(), ValueError> {
        let len = self.buf.len() - start;
        if len > MAX_ARRAY {
            return Err(ValueError("array too long".into()));
        }
        self.buf[len_at..len_at + 4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }
}

fn int_in(t: &Type, v: &Value, min: u64, max: u64) -> Result<u64, ValueError> {
    v.as_u64()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| bad(t, v))
}

fn sint_in(t: &Type, v: &Value, min: i64, max: i64) -> Result<i64, ValueError> {
    v.as_i64()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| bad(t, v))
}

/// A valid object path: `/`, or `/`-separated non-empty elements of `[A-Za-z0-9_]`.
pub fn is_object_path(s: &str) -> bool {
    if s == "/" {
        return true;
    }
    let Some(rest) = s.strip_prefix('/') else {
        return false;
    };
    rest.split('/')
        .all(|e| !e.is_empty() && e.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'))
}

/// Reads values from a buffer, in either byte order, with alignment counted from `base` bytes
/// before the buffer's start (a body starts at an 8-byte boundary, so its base is 0).
pub struct Reader<'a> {
    buf: &'a [u8],
    /// The read position.
    pub pos: usize,
    big_endian: bool,
}

impl<'a> Reader<'a> {
    /// Read `buf`, in big-endian order when `big_endian`.
    pub fn new(buf: &'a [u8], big_endian: bool) -> Self {
        Reader {
            buf,
            pos: 0,
            big_endian,
        }
    }

    /// Skip to the next multiple of `align`; padding must be zero.
    pub fn align(&mut self, align: usize) -> Result<(), WireError> {
        let next = self.pos.div_ceil(align) * align;
        let pad = self.buf.get(self.pos..next).ok_or(WireError("truncated"))?;
        if pad.iter().any(|&b| b != 0) {
            return Err(WireError("non-zero padding"));
        }
        self.pos = next;
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError("truncated"))?;
        let s = self.buf.get(self.pos..end).ok_or(WireError("truncated"))?;
        self.pos = end;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.align(N)?;
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        if self.big_endian {
            a.reverse();
        }
        Ok(a)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    /// A 32-bit unsigned integer.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }

    /// A string (`s` or `o`): UTF-8, NUL-terminated, no NUL inside.
    pub fn string(&mut self) -> Result<&'a str, WireError> {
        let len = self.u32()? as usize;
        self.text(len)
    }

    /// A signature (`g`), checked.
    pub fn signature(&mut self) -> Result<&'a str, WireError> {
        let len = usize::from(self.u8()?);
        let s = self.text(len)?;
        signature::parse(s).map_err(|_| WireError("invalid signature"))?;
        Ok(s)
    }

    fn text(&mut self, len: usize) -> Result<&'a str, WireError> {
        let bytes = self.take(len)?;
        if self.take(1)? != [0] {
            return Err(WireError("string without its NUL"));
        }
        if bytes.contains(&0) {
            return Err(WireError("NUL inside a string"));
        }
        std::str::from_utf8(bytes).map_err(|_| WireError("string is not UTF-8"))
    }

    /// Read values of the types `types` (a message body) as JSON.
    pub fn values(&mut self, types: &[Type]) -> Result<Vec<Value>, WireError> {
        types.iter().map(|t| self.value(t, 0)).collect()
    }

    /// Read one value of type `t` as JSON.
    pub fn value(&mut self, t: &Type, depth: usize) -> Result<Value, WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError("nested too deeply"));
        }
        Ok(match t {
            Type::Byte => self.u8()?.into(),
            Type::Bool => match self.u32()? {
                0 => false.into(),
                1 => true.into(),
                _ => return Err(WireError("boolean other than 0 or 1")),
            },
            Type::Int16 => i16::from_le_bytes(self.fixed()?).into(),
            Type::Uint16 => u16::from_le_bytes(self.fixed()?).into(),
            Type::Int32 => i32::from_le_bytes(self.fixed()?).into(),
            Type::Uint32 | Type::UnixFd => self.u32()?.into(),
            Type::Int64 => i64::from_le_bytes(self.fixed()?).into(),
            Type::Uint64 => u64::from_le_bytes(self.fixed()?).into(),
            Type::Double => {
                let d = f64::from_le_bytes(self.fixed()?);
                Number::from_f64(d).map_or(Value::Null, Value::Number)
            }
            Type::String => self.string()?.into(),
            Type::ObjectPath => {
                let s = self.string()?;
                if !is_object_path(s) {
                    return Err(WireError("invalid object path"));
                }
                s.into()
            }
            Type::Signature => self.signature()?.into(),
            Type::Variant => {
                let sig = self.signature()?;
                let inner = signature::parse_single(sig).map_err(|_| WireError("bad variant"))?;
                let v = self.value(&inner, depth + 1)?;
                let mut m = Map::new();
                m.insert("t".into(), sig.into());
                m.insert("v".into(), v);
                Value::Object(m)
            }
            Type::Array(elem) if **elem == Type::Byte => {
                let len = self.array_len()?;
                base64_encode(self.take(len)?).into()
            }
            Type::Array(elem) => {
                let len = self.array_len()?;
                self.align(elem.alignment())?;
                let end = self.pos + len;
                let mut items = Vec::new();
                while self.pos < end {
                    items.push(self.value(elem, depth + 1)?);
                }
                if self.pos != end {
                    return Err(WireError("array length mismatch"));
                }
                Value::Array(items)
            }
            Type::Dict(key, value) => {
                let len = self.array_len()?;
                self.align(8)?;
                let end = self.pos + len;
                let mut entries = Map::new();
                while self.pos < end {
                    self.align(8)?;
                    let k = self.value(key, depth + 1)?;
                    let v = self.value(value, depth + 1)?;
                    entries.insert(key_text(k), v);
                }
                if self.pos != end {
                    return Err(WireError("array length mismatch"));
                }
                Value::Object(entries)
            }
            Type::Struct(fields) => {
                self.align(8)?;
                let mut items = Vec::with_capacity(fields.len());
                for f in fields {
                    items.push(self.value(f, depth + 1)?);
                }
                Value::Array(items)
            }
        })
    }

    /// An array's length, checked against the limit and the bytes that remain.
    fn array_len(&mut self) -> Result<usize, WireError> {
        let len = self.u32()? as usize;
        if len > MAX_ARRAY {
            return Err(WireError("array too long"));
        }
        if len > self.buf.len().saturating_sub(self.pos) {
            return Err(WireError("truncated"));
        }
        Ok(len)
    }
}

/// A dict key as JSON object key: strings as they are, other values as their JSON text.
fn key_text(k: Value) -> String {
    match k {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64; padding optional, nothing else tolerated. `None` when it is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let s = text.trim_end_matches('=');
    if text.len() - s.len() > 2 || s.len() % 4 == 1 {
        return None;
    }
    if text.len() != s.len() && text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Write `args` (a JSON array) as a body of signature `sig`.
pub fn encode_body(sig: &str, args: &Value) -> Result<Vec<u8>, ValueError> {
    let types = signature::parse(sig).map_err(|e| ValueError(e.to_string()))?;
    let Value::Array(args) = args else {
        return Err(ValueError("arguments must be an array".into()));
    };
    let mut w = Writer::new();
    w.values(&types, args)?;
    Ok(w.buf)
}

/// Read a body of signature `sig` as a JSON array; all of it must be used.
pub fn decode_body(sig: &str, body: &[u8], big_endian: bool) -> Result<Vec<Value>, WireError> {
    let types = signature::parse(sig).map_err(|_| WireError("invalid signature"))?;
    let mut r = Reader::new(body, big_endian);
    let values = r.values(&types)?;
    if r.pos != body.len() {
        return Err(WireError("trailing bytes after the body"));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(sig: &str, args: Value) -> Value {
        let body = encode_body(sig, &args).unwrap();
        Value::Array(decode_body(sig, &body, false).unwrap())
    }

    #[test]
    fn doubles_are_exact_as_values_and_as_dict_keys() {
        // The shortest text of a double reads back as that double: a key written once reads
        // back unchanged (found by the dbus_json fuzz target).
        let args: Value = serde_json::from_str(
            r#"[{"999999999999999999999999999999999999999990": "K", "-2": "w"}, [9.999999999999999e+41]]"#,
        )
        .unwrap();
        let once = round_trip("a{ds}ad", args);
        assert_eq!(once, round_trip("a{ds}ad", once.clone()));
        let key = once[0]
            .as_object()
            .unwrap()
            .keys()
            .find(|k| k.contains('e'))
            .unwrap();
        assert_eq!(key.parse::<f64>().unwrap(), 1e42);
        assert_eq!(
            once[1][0].as_f64().unwrap().to_bits(),
            9.999999999999999e41_f64.to_bits()
        );
    }

    #[test]
    fn every_type_round_trips() {
        let args = json!([
            255, true, -32768, 65535, -2147483648i64, 4294967295u64,
            i64::MIN, u64::MAX, 2.5, "s", "/a/b", "a{sv}",
            {"t": "(ia{sv})", "v": [1, {"k": {"t": "ay", "v": "AAE="}}]},
            "aGVsbG8=", ["x", "y"], {"1": "one", "-2": "minus two"}, [[1, "x"]], ["", "AA=="],
        ]);
        let sig = "ybnqiuxtdsogvayasa{is}a(is)aay";
        assert_eq!(round_trip(sig, args.clone()), args);
        assert_eq!(
            round_trip("a{bs}", json!([{"true": "t"}])),
            json!([{"true": "t"}])
        );
        assert_eq!(round_trip("ay", json!([""])), json!([""]));
    }

    #[test]
    fn bad_values_are_errors() {
        for (sig, args) in [
            ("y", json!([256])),
            ("i", json!([2147483648u64])),
            ("u", json!([-1])),
            ("t", json!([-1])),
            ("b", json!([1])),
            ("s", json!([1])),
            ("s", json!(["a\u{0}b"])),
            ("o", json!(["no/slash"])),
            ("g", json!(["a"])),
            ("v", json!([{"t": "ss", "v": 1}])),
            ("v", json!([{"v": 1}])),
            ("ay", json!(["***"])),
            ("(ii)", json!([[1]])),
            ("a{is}", json!([{"x": "y"}])),
            ("h", json!([0])),
            ("s", json!([])),
            ("s", json!("notarray")),
        ] {
            assert!(encode_body(sig, &args).is_err(), "{sig} {args}");
        }
    }

    #[test]
    fn wire_layout_matches_the_specification() {
        // a(yv) with one entry: length, padding to 8, byte, signature "s", padding, string.
        let body = encode_body("ya(yv)", &json!([1, [[7, {"t": "s", "v": "ab"}]]])).unwrap();
        assert_eq!(
            body,
            [1, 0, 0, 0, 11, 0, 0, 0, 7, 1, b's', 0, 2, 0, 0, 0, b'a', b'b', 0]
        );
        // Big-endian input reads the same.
        let be = [0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        assert_eq!(
            decode_body("ix", &be, true).unwrap(),
            vec![json!(5), json!(9)]
        );
    }

    #[test]
    fn bad_wire_data_is_an_error() {
        for (sig, bytes) in [
            ("b", &[2, 0, 0, 0][..]),
            ("s", &[5, 0, 0, 0, b'a', 0][..]),
            ("s", &[1, 0, 0, 0, 0xff, 0][..]),
            ("as", &[255, 255, 255, 255][..]),
            ("i", &[1, 0, 0, 0, 0][..]),
            ("v", &[1, b'(', 0][..]),
            ("o", &[1, 0, 0, 0, b'x', 0][..]),
        ] {
            assert!(decode_body(sig, bytes, false).is_err(), "{sig}");
        }
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, text) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64_encode(raw.as_bytes()), text);
            assert_eq!(base64_decode(text).unwrap(), raw.as_bytes());
        }
        assert_eq!(base64_decode("Zg").unwrap(), b"f");
        for bad in ["Z", "Zg=", "Z===", "Zm9v!", "Zg==Zg=="] {
            assert!(base64_decode(bad).is_none(), "{bad}");
        }
    }
}
