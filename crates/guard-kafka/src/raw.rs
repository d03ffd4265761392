//! Reading a consumed message's headers as bytes, through librdkafka's C API.
//!
//! rust-rdkafka's header accessors (`Headers::get`, `iter`, `try_get`) turn each header key
//! into `&str` with `CStr::to_str().unwrap()`: a producer that sends a header key that is not
//! UTF-8 (Kafka header keys are bytes on the wire, and librdkafka does not check them) makes
//! every one of them panic. The guard must read hostile envelopes, so it reads keys as bytes
//! here and decides about UTF-8 itself. This is the only `unsafe` code in the workspace.
#![allow(unsafe_code)]

use rdkafka::bindings as rdsys;
use rdkafka::message::BorrowedMessage;
use std::ffi::{c_char, c_void, CStr};

/// The header block could not be parsed (librdkafka's error name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHeaders(pub rdsys::rd_kafka_resp_err_t);

/// Call `f(key, value)` for every header of `m`, in order, without any UTF-8 check. Returns
/// how many headers the message has, or the error librdkafka gave when the header block is
/// malformed.
pub fn visit_headers(m: &BorrowedMessage<'_>, mut f: impl FnMut(&[u8], Option<&[u8]>)) -> Result<usize, BadHeaders> {
    let mut hdrs: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m.ptr()` is a live consumer message for as long as `m` is borrowed (the
    // BorrowedMessage holds its event). `rd_kafka_message_headers` parses the message's header
    // block on first use and writes a pointer to headers owned by the message into `hdrs`;
    // rust-rdkafka's own `Message::headers` makes the same call on the same pointer.
    let err = unsafe { rdsys::rd_kafka_message_headers(m.ptr(), &mut hdrs) };
    match err {
        rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR if !hdrs.is_null() => {}
        rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        | rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__NOENT => return Ok(0),
        other => return Err(BadHeaders(other)),
    }
    // SAFETY: `hdrs` is the non-null header list owned by the message, valid while `m` is.
    let count = unsafe { rdsys::rd_kafka_header_cnt(hdrs) };
    for idx in 0..count {
        let mut name: *const c_char = std::ptr::null();
        let mut value: *const c_void = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `idx < count`; librdkafka writes pointers into memory owned by the header
        // list (a NUL-terminated name, and `size` bytes of value or a null pointer).
        let err = unsafe { rdsys::rd_kafka_header_get_all(hdrs, idx, &mut name, &mut value, &mut size) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            return Err(BadHeaders(err));
        }
        // SAFETY: `name` is non-null and NUL-terminated (librdkafka copies header names with a
        // terminator), and lives as long as the header list. A name with an inner NUL byte is
        // seen up to that byte.
        let key = unsafe { CStr::from_ptr(name) }.to_bytes();
        let value = if value.is_null() {
            None
        } else {
            // SAFETY: `value` points at `size` bytes owned by the header list.
            Some(unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) })
        };
        f(key, value);
    }
    Ok(count)
}
