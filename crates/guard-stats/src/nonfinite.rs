//! JSON has no infinities: serde_json writes a non-finite `f64` as `null` and cannot read it
//! back. Empty moments keep `min = +∞` and `max = −∞`, so those two fields travel as `null`
//! and come back as the infinity of their side.

macro_rules! side {
    ($name:ident, $inf:expr) => {
        pub mod $name {
            use serde::{Deserialize, Deserializer, Serializer};

            pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
                if x.is_finite() {
                    s.serialize_f64(*x)
                } else {
                    s.serialize_none()
                }
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
                Ok(Option::<f64>::deserialize(d)?.unwrap_or($inf))
            }
        }
    };
}

side!(pos, f64::INFINITY);
side!(neg, f64::NEG_INFINITY);

/// Statistics that may be infinite or NaN (a p-value of an empty window, a variance ratio over
/// a zero variance) travel as numbers: `+∞` as `f64::MAX`, `−∞` and NaN as 0.
pub mod clamp {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(if x.is_finite() {
            *x
        } else if *x > 0.0 {
            f64::MAX
        } else {
            0.0
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        f64::deserialize(d)
    }
}
