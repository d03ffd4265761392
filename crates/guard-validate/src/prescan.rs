//! One bounded pass over the raw bytes that enforces [`Limits`] before any tree is built.
//!
//! The scanner keeps a stack no deeper than `max_depth` and stops at the first violation, so the
//! work it does on a hostile record is bounded by the limits, not by the record: a depth bomb stops
//! after `max_depth` brackets, a 5-million-element array after `max_array_len` elements. It does
//! not validate JSON grammar (the decoder does that); on bytes it does not understand it keeps
//! going and leaves the verdict to the decoder.

use guard_core::{Limits, Reason, ReasonCode};

/// Number tokens may always be this long, whatever `max_string_len` says.
const MIN_NUMBER_TOKEN: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
}

#[derive(Clone, Copy)]
struct Frame {
    kind: Kind,
    /// Members or elements seen so far.
    count: usize,
    /// True until the first member or element starts.
    empty: bool,
}

/// Check `bytes` against `limits`. `Ok` means the record is within every bound and is valid
/// UTF-8; it may still be malformed JSON.
pub fn prescan(bytes: &[u8], limits: &Limits) -> Result<(), Reason> {
    if bytes.len() > limits.max_bytes {
        return Err(Reason::new(
            ReasonCode::LIMIT_BYTES,
            format!("payload is {} bytes, limit {}", bytes.len(), limits.max_bytes),
        ));
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(Reason::new(
            ReasonCode::DECODE_UTF8,
            format!("invalid utf-8 at byte {}", e.valid_up_to()),
        )
        .at(format!("@{}", e.valid_up_to())));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Reason::new(ReasonCode::DECODE_EMPTY, "payload is empty"));
    }
    let mut stack: Vec<Frame> = Vec::with_capacity(limits.max_depth.min(64));
    let mut i = 0;
    let n = bytes.len();
    while i < n {
        let b = bytes[i];
        match b {
            b'{' | b'[' => {
                count_value_start(&mut stack, limits, i)?;
                if stack.len() >= limits.max_depth {
                    return Err(Reason::new(
                        ReasonCode::LIMIT_DEPTH,
                        format!("nesting deeper than {}", limits.max_depth),
                    )
                    .at(format!("@{i}")));
                }
                stack.push(Frame {
                    kind: if b == b'{' { Kind::Object } else { Kind::Array },
                    count: 0,
                    empty: true,
                });
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
            }
            b',' => {
                if let Some(top) = stack.last_mut() {
                    top.count += 1;
                    check_count(top, limits, i)?;
                }
                i += 1;
            }
            b'"' => {
                // Keys and string values both count as a member/element start when they open one.
                let in_key_position = matches!(stack.last(), Some(f) if f.kind == Kind::Object);
                if !in_key_position || stack.last().is_some_and(|f| f.empty) {
                    count_value_start(&mut stack, limits, i)?;
                }
                let start = i;
                i += 1;
                while i < n {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                    if i - start > limits.max_string_len + 1 {
                        return Err(Reason::new(
                            ReasonCode::LIMIT_STRING_LEN,
                            format!("string longer than {} bytes", limits.max_string_len),
                        )
                        .at(format!("@{start}")));
                    }
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' | b'N' | b'I' | b'+' => {
                count_value_start(&mut stack, limits, i)?;
                let start = i;
                // Plain integers (the common case: pixels, counts) need no further check.
                let mut plain = true;
                while i < n && !matches!(bytes[i], b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t' | b':') {
                    plain &= bytes[i].is_ascii_digit() || (i == start && bytes[i] == b'-');
                    i += 1;
                    if i - start > limits.max_string_len.max(MIN_NUMBER_TOKEN) {
                        return Err(Reason::new(
                            ReasonCode::LIMIT_STRING_LEN,
                            format!(
                                "number token longer than {} bytes",
                                limits.max_string_len.max(MIN_NUMBER_TOKEN)
                            ),
                        )
                        .at(format!("@{start}")));
                    }
                }
                if !plain || i - start > 20 {
                    check_number(&bytes[start..i], start)?;
                }
            }
            b't' | b'f' | b'n' => {
                count_value_start(&mut stack, limits, i)?;
                i += 1;
                while i < n && bytes[i].is_ascii_alphabetic() {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// A value (or, in an object, a key) starts: the first one in a container counts as element one.
#[inline]
fn count_value_start(stack: &mut [Frame], limits: &Limits, at: usize) -> Result<(), Reason> {
    if let Some(top) = stack.last_mut() {
        if top.empty {
            top.empty = false;
            top.count = 1;
            check_count(top, limits, at)?;
        }
    }
    Ok(())
}

#[inline]
fn check_count(frame: &Frame, limits: &Limits, at: usize) -> Result<(), Reason> {
    match frame.kind {
        Kind::Array if frame.count > limits.max_array_len => Err(Reason::new(
            ReasonCode::LIMIT_ARRAY_LEN,
            format!("array longer than {} elements", limits.max_array_len),
        )
        .at(format!("@{at}"))),
        Kind::Object if frame.count > limits.max_fields => Err(Reason::new(
            ReasonCode::LIMIT_FIELDS,
            format!("object with more than {} members", limits.max_fields),
        )
        .at(format!("@{at}"))),
        _ => Ok(()),
    }
}

/// Reject numbers that are not finite 64-bit floats: `NaN`, `Infinity`, and overflow like `1e999`.
#[inline]
fn check_number(token: &[u8], at: usize) -> Result<(), Reason> {
    let first_alpha = token
        .iter()
        .position(|b| b.is_ascii_alphabetic() && *b != b'e' && *b != b'E');
    let non_finite = if first_alpha.is_some() {
        // NaN, Infinity, -Infinity and friends: not JSON, and not finite either.
        let t = token.to_ascii_lowercase();
        t.windows(3).any(|w| w == b"nan") || t.windows(3).any(|w| w == b"inf")
    } else if token.len() > 20 || token.iter().any(|b| matches!(b, b'e' | b'E')) {
        // Only long or exponent tokens can overflow; parsing them is bounded by the token limit.
        std::str::from_utf8(token)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(|v| !v.is_finite())
    } else {
        false
    };
    if non_finite {
        let shown = String::from_utf8_lossy(&token[..token.len().min(32)]).into_owned();
        return Err(
            Reason::new(ReasonCode::VALUE_NON_FINITE, format!("non-finite number {shown}")).at(format!("@{at}")),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(bytes: &[u8], limits: &Limits) -> Option<&'static str> {
        prescan(bytes, limits).err().map(|r| r.code.as_str())
    }

    fn small() -> Limits {
        Limits {
            max_bytes: 1000,
            max_depth: 3,
            max_fields: 2,
            max_array_len: 3,
            max_string_len: 5,
            ..Limits::default()
        }
    }

    #[test]
    fn accepts_within_limits() {
        let l = small();
        assert_eq!(code(br#"{"a":[1,2,3],"b":{"c":"xyz"}}"#, &l), None);
        assert_eq!(code(b"[]", &l), None);
        assert_eq!(code(b"{}", &l), None);
        assert_eq!(code(br#"["a\"b"]"#, &l), None);
    }

    #[test]
    fn each_limit_has_its_code() {
        let l = small();
        assert_eq!(code(&[b' '; 1001], &l), Some("limit.bytes"));
        assert_eq!(code(b"[[[[1]]]]", &l), Some("limit.depth"));
        assert_eq!(code(br#"{"a":1,"b":2,"c":3}"#, &l), Some("limit.fields"));
        assert_eq!(code(b"[1,2,3,4]", &l), Some("limit.array_len"));
        assert_eq!(code(br#"["abcdefgh"]"#, &l), Some("limit.string_len"));
        assert_eq!(code(br#"{"abcdefgh":1}"#, &l), Some("limit.string_len"));
        assert_eq!(code(b"\xff\xfe", &l), Some("decode.utf8"));
        assert_eq!(code(b"", &l), Some("decode.empty"));
        assert_eq!(code(b"  \n", &l), Some("decode.empty"));
        assert_eq!(code(b"[NaN]", &l), Some("value.non_finite"));
        assert_eq!(code(b"[1e999]", &l), Some("value.non_finite"));
        assert_eq!(code(b"[-1e999]", &l), Some("value.non_finite"));
        assert_eq!(code(b"[-Infinity]", &l), Some("value.non_finite"));
        assert_eq!(code(b"[1e308]", &l), None);
    }

    #[test]
    fn array_of_strings_counts_elements_once() {
        let l = small();
        assert_eq!(code(br#"["a","b","c"]"#, &l), None);
        assert_eq!(code(br#"["a","b","c","d"]"#, &l), Some("limit.array_len"));
    }

    #[test]
    fn work_is_bounded_on_bombs() {
        let l = Limits::default();
        let deep = "[".repeat(100_000);
        let r = prescan(deep.as_bytes(), &l).err().map(|r| r.code);
        assert_eq!(r, Some(ReasonCode::LIMIT_DEPTH));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = prescan(&bytes, &small());
            let _ = prescan(&bytes, &Limits::default());
        }

        #[test]
        fn valid_json_within_limits_passes(v in arb_json()) {
            let text = serde_json::to_vec(&v).unwrap_or_default();
            let l = Limits { max_bytes: 1 << 20, max_depth: 16, max_fields: 64, max_array_len: 64, max_string_len: 1024, ..Limits::default() };
            proptest::prop_assert!(prescan(&text, &l).is_ok(), "{}", String::from_utf8_lossy(&text));
        }
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|v| serde_json::json!(v)),
            (-1e300f64..1e300).prop_map(|v| serde_json::json!(v)),
            "[a-z\\\\\"é ]{0,12}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
