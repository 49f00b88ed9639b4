//! D-Bus type signatures, parsed into a tree of [`Type`]s.
//!
//! The rules are the D-Bus specification's ("Type System"): at most 255 bytes, arrays and
//! structs each nested at most 32 deep, no empty structs, dict entries only directly inside an
//! array with a basic type as key.

use std::fmt;

/// The longest signature the specification allows, in bytes.
pub const MAX_SIGNATURE: usize = 255;
/// How deep arrays (and, separately, structs) may nest.
const MAX_NESTING: usize = 32;

/// One complete D-Bus type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// `y`
    Byte,
    /// `b`
    Bool,
    /// `n`
    Int16,
    /// `q`
    Uint16,
    /// `i`
    Int32,
    /// `u`
    Uint32,
    /// `x`
    Int64,
    /// `t`
    Uint64,
    /// `d`
    Double,
    /// `s`
    String,
    /// `o`
    ObjectPath,
    /// `g`
    Signature,
    /// `h` (a file descriptor index: never carried by this bridge)
    UnixFd,
    /// `v`
    Variant,
    /// `aT`
    Array(Box<Type>),
    /// `(T...)`
    Struct(Vec<Type>),
    /// `a{KV}` (the array and its entries together)
    Dict(Box<Type>, Box<Type>),
}

/// A signature that breaks the specification's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signature {0:?}")]
pub struct SignatureError(pub String);

impl Type {
    /// The alignment of the type on the wire, in bytes.
    pub fn alignment(&self) -> usize {
        match self {
            Type::Byte | Type::Signature | Type::Variant => 1,
            Type::Int16 | Type::Uint16 => 2,
            Type::Bool
            | Type::Int32
            | Type::Uint32
            | Type::String
            | Type::ObjectPath
            | Type::UnixFd
            | Type::Array(_)
            | Type::Dict(..) => 4,
            Type::Int64 | Type::Uint64 | Type::Double | Type::Struct(_) => 8,
        }
    }

    /// A basic type (one that may be a dict key).
    pub fn is_basic(&self) -> bool {
        !matches!(
            self,
            Type::Variant | Type::Array(_) | Type::Struct(_) | Type::Dict(..)
        )
    }

    fn code(&self) -> Option<char> {
        Some(match self {
            Type::Byte => 'y',
            Type::Bool => 'b',
            Type::Int16 => 'n',
            Type::Uint16 => 'q',
            Type::Int32 => 'i',
            Type::Uint32 => 'u',
            Type::Int64 => 'x',
            Type::Uint64 => 't',
            Type::Double => 'd',
            Type::String => 's',
            Type::ObjectPath => 'o',
            Type::Signature => 'g',
            Type::UnixFd => 'h',
            Type::Variant => 'v',
            _ => return None,
        })
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.code() {
            return write!(f, "{c}");
        }
        match self {
            Type::Array(t) => write!(f, "a{t}"),
            Type::Dict(k, v) => write!(f, "a{{{k}{v}}}"),
            Type::Struct(ts) => {
                f.write_str("(")?;
                for t in ts {
                    write!(f, "{t}")?;
                }
                f.write_str(")")
            }
            _ => Ok(()),
        }
    }
}

/// Parse a signature: any number of complete types (the body of a message).
pub fn parse(sig: &str) -> Result<Vec<Type>, SignatureError> {
    if sig.len() > MAX_SIGNATURE {
        return Err(SignatureError(sig.to_owned()));
    }
    let mut p = Parser {
        s: sig.as_bytes(),
        pos: 0,
    };
    let mut types = Vec::new();
    while p.pos < p.s.len() {
        types.push(p.one(0, 0).ok_or_else(|| SignatureError(sig.to_owned()))?);
    }
    Ok(types)
}

/// Parse a signature that must be exactly one complete type (a variant's).
pub fn parse_single(sig: &str) -> Result<Type, SignatureError> {
    let mut types = parse(sig)?;
    if types.len() != 1 {
        return Err(SignatureError(sig.to_owned()));
    }
    Ok(types.remove(0))
}

/// The signature text of a list of types.
pub fn to_string(types: &[Type]) -> String {
    types.iter().map(Type::to_string).collect()
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn one(&mut self, arrays: usize, structs: usize) -> Option<Type> {
        let c = *self.s.get(self.pos)?;
        self.pos += 1;
        Some(match c {
            b'y' => Type::Byte,
            b'b' => Type::Bool,
            b'n' => Type::Int16,
            b'q' => Type::Uint16,
            b'i' => Type::Int32,
            b'u' => Type::Uint32,
            b'x' => Type::Int64,
            b't' => Type::Uint64,
            b'd' => Type::Double,
            b's' => Type::String,
            b'o' => Type::ObjectPath,
            b'g' => Type::Signature,
            b'h' => Type::UnixFd,
            b'v' => Type::Variant,
            b'a' => {
                if arrays >= MAX_NESTING {
                    return None;
                }
                if self.s.get(self.pos) == Some(&b'{') {
                    self.pos += 1;
                    let key = self.one(arrays + 1, structs)?;
                    if !key.is_basic() {
                        return None;
                    }
                    let value = self.one(arrays + 1, structs)?;
                    if self.s.get(self.pos) != Some(&b'}') {
                        return None;
                    }
                    self.pos += 1;
                    Type::Dict(Box::new(key), Box::new(value))
                } else {
                    Type::Array(Box::new(self.one(arrays + 1, structs)?))
                }
            }
            b'(' => {
                if structs >= MAX_NESTING {
                    return None;
                }
                let mut fields = Vec::new();
                loop {
                    if self.s.get(self.pos) == Some(&b')') {
                        self.pos += 1;
                        break;
                    }
                    fields.push(self.one(arrays, structs + 1)?);
                }
                if fields.is_empty() {
                    return None;
                }
                Type::Struct(fields)
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_signatures_round_trip() {
        for sig in [
            "",
            "y",
            "ybnqiuxtdsogv",
            "as",
            "a{sv}",
            "a{oa{sa{sv}}}",
            "(ii)",
            "a(sa(iv))",
            "aay",
        ] {
            assert_eq!(to_string(&parse(sig).unwrap()), sig, "{sig}");
        }
    }

    #[test]
    fn invalid_signatures_are_refused() {
        let deep_arrays = "a".repeat(33) + "y";
        let deep_structs = "(".repeat(33) + "y" + &")".repeat(33);
        for sig in [
            "a",
            "()",
            "(i",
            "i)",
            "a{vs}",
            "{ss}",
            "a{s}",
            "a{sss}",
            "z",
            "a{ss",
            &deep_arrays,
            &deep_structs,
        ] {
            assert!(parse(sig).is_err(), "{sig}");
        }
        assert!(parse(&"a".repeat(32)).is_err());
        assert!(parse(&("a".repeat(32) + "y")).is_ok());
        assert!(parse_single("ss").is_err());
        assert!(parse_single("").is_err());
    }
}
