//! Fuzz the server and client handshake parsers: never panic, and an accepted request
//! yields a response the client side of the codec can check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws::handshake::{parse_request, ClientHandshake, ServerConfig};
use ws::DeflateConfig;

fuzz_target!(|data: &[u8]| {
    let cfg = ServerConfig::default();
    if let Ok(Some(req)) = parse_request(data, &cfg) {
        assert!(req.head_len <= data.len());
        let acc = req.accept(&cfg);
        assert!(acc.response.starts_with(b"HTTP/1.1 101"));
    }
    let client = ClientHandshake::new([0; 16], vec!["chat".into()], DeflateConfig::default());
    let _ = client.parse_response(data);
});
