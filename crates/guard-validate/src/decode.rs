//! JSON decoding into [`serde_json::Value`] that refuses duplicate object keys.
//!
//! Duplicate keys are a known smuggling trick: two parsers of the same bytes can see different
//! values (first wins in one, last wins in another). The guard rejects them instead of picking.

use guard_core::{Reason, ReasonCode};
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Decode `bytes` (already checked by [`crate::prescan`]) into a value.
pub fn decode(bytes: &[u8]) -> Result<Value, Reason> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = NoDupValue.deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(value)
}

fn classify(e: serde_json::Error) -> Reason {
    let msg = e.to_string();
    let at = format!("@{}:{}", e.line(), e.column());
    if let Some(key) = msg.strip_prefix(DUP_PREFIX) {
        let key = key.split(" at line").next().unwrap_or(key);
        return Reason::new(ReasonCode::DECODE_DUPLICATE_KEY, format!("duplicate key {key}")).at(at);
    }
    if msg.starts_with("number out of range") {
        return Reason::new(ReasonCode::VALUE_NON_FINITE, msg).at(at);
    }
    Reason::new(ReasonCode::DECODE_JSON, msg).at(at)
}

const DUP_PREFIX: &str = "duplicate key ";

struct NoDupValue;

impl<'de> DeserializeSeed<'de> for NoDupValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(NoDupVisitor)
    }
}

struct NoDupVisitor;

impl<'de> Visitor<'de> for NoDupVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(NoDupValue)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(A::Error::custom(format!("{DUP_PREFIX}{shown:?}")));
            }
            let value = map.next_value_seed(NoDupValue)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_serde_json() {
        let text = br#"{"a":[1,-2,3.5,"x",null,true],"b":{"c":{}}}"#;
        let ours = decode(text).ok();
        let theirs: Option<Value> = serde_json::from_slice(text).ok();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn rejects_duplicate_keys_at_any_depth() {
        let r = decode(br#"{"a":1,"a":2}"#).err().map(|r| r.code);
        assert_eq!(r, Some(ReasonCode::DECODE_DUPLICATE_KEY));
        let r = decode(br#"{"x":{"label":1,"label":7}}"#).err();
        assert_eq!(r.as_ref().map(|r| r.code), Some(ReasonCode::DECODE_DUPLICATE_KEY));
        assert!(r.map(|r| r.detail).unwrap_or_default().contains("label"));
    }

    #[test]
    fn syntax_errors_are_decode_json() {
        for bad in [&b"{"[..], b"[1,]", b"{\"a\" 1}", b"nul", b"[1] [2]", b"Nope"] {
            assert_eq!(
                decode(bad).err().map(|r| r.code),
                Some(ReasonCode::DECODE_JSON),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn overflow_is_non_finite() {
        assert_eq!(
            decode(b"[1e999]").err().map(|r| r.code),
            Some(ReasonCode::VALUE_NON_FINITE)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
