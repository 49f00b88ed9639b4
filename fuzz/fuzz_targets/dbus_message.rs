//! D-Bus messages from arbitrary bytes: `Message::total_len` on the first 16 bytes and
//! `Message::decode` on the whole input must never panic; a message that decodes must have a
//! body that either decodes by its signature or is an error, and must encode again (in
//! little-endian order) into bytes that decode to the same message.

#![no_main]

use ferry_bridge::dbus::message::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(head) = data.get(..16).and_then(|h| <&[u8; 16]>::try_from(h).ok()) {
        let _ = Message::total_len(head);
    }
    let Ok(m) = Message::decode(data) else {
        return;
    };
    let args = m.args();
    let Ok(bytes) = m.encode(m.serial) else {
        return;
    };
    let again = Message::decode(&bytes).expect("an encoded message decodes");
    assert_eq!(again.serial, m.serial);
    assert_eq!(again.path, m.path);
    assert_eq!(again.member, m.member);
    assert_eq!(again.signature, m.signature);
    if !m.big_endian {
        assert_eq!(again.body, m.body);
    }
    // The body means the same in either byte order.
    assert_eq!(again.args().ok(), args.ok());
});
