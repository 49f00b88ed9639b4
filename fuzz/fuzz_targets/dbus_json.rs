//! JSON to the D-Bus wire and back, with any signature: the input is a signature line and a JSON
//! array of arguments. Encoding may refuse (a bad value is an InvalidArgs error), but never
//! panics; what it encodes must decode, and after that one normalisation (numbers read back
//! as their D-Bus type, dict keys as their canonical text) JSON -> wire -> JSON is a fixed point.

#![no_main]

use ferry_bridge::dbus::marshal::{decode_body, encode_body};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (sig, json) = text.split_once('\n').unwrap_or((text, "[]"));
    let Ok(args) = serde_json::from_str::<Value>(json) else {
        return;
    };
    let Ok(wire) = encode_body(sig, &args) else {
        return;
    };
    let once = Value::Array(decode_body(sig, &wire, false).expect("what was encoded decodes"));
    let wire2 = encode_body(sig, &once).expect("decoded values encode");
    let twice = Value::Array(decode_body(sig, &wire2, false).expect("and decode"));
    assert_eq!(once, twice);
    assert_eq!(wire2, encode_body(sig, &twice).unwrap());
});
