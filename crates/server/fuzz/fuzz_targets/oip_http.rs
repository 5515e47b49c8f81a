//! Fuzz target: an HTTP infer body, JSON with or without Triton's binary
//! data extension. Input layout: `mode: u8 | len: u16 le | body`; mode 0:
//! no `Inference-Header-Content-Length`, 1: `len` as its value, 2: its
//! value is the body's first `len % 16` bytes as text (garbage headers).
//! Properties: no panic; every parsed request goes through item building
//! and response writing (`common.rs`).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (mode, len, body) = (data[0], u16::from_le_bytes([data[1], data[2]]), &data[3..]);
    let text;
    let (header, body) = match mode % 3 {
        0 => (None, body),
        1 => {
            text = len.to_string();
            (Some(text.as_str()), body)
        }
        _ => {
            let n = (len as usize % 16).min(body.len());
            match std::str::from_utf8(&body[..n]) {
                Ok(h) => (Some(h), &body[n..]),
                Err(_) => return,
            }
        }
    };
    if let Ok(req) = tensorgate_server::front::http::codec::parse_infer("m", "", Bytes::copy_from_slice(body), header) {
        common::exercise(&req);
    }
});
