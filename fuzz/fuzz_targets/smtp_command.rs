//! The SMTP command reader: any line gets a request or a reply, never a panic, and a reply
//! is always a 5xx with an enhanced status.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(reply) = markgate::frontend::smtp::command::parse(data) {
        assert!((500..600).contains(&reply.code), "{reply}");
        assert!(!reply.to_wire().trim_end().contains(['\r', '\n']));
    }
});
