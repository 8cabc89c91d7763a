//! Value encoding, byte-compatible with `mimeiapify`'s `serde.dumps` /
//! `serde.loads` (see docs/compat.md, "Pools, keys, values").
//!
//! Values cross the WIT boundary as JSON. Stored, a JSON value becomes what
//! Python's `dumps` makes of the equivalent Python value: a string as is, an
//! integer or float as `str(x)`, a boolean as `"1"`/`"0"`, null as `"null"`,
//! an object or array as `json.dumps(x, ensure_ascii=False)` (separators
//! `", "` and `": "`, keys in the given order). Read back, a raw value becomes
//! what `loads` makes of it: `"null"` is null, `"1"`/`"0"` are true/false,
//! JSON text is parsed, anything else is a string. The round trip is the
//! library's, lossy cases included (`1` reads back as `true`).

use serde_json::{Map, Value};

/// `serde.dumps(x)` for the Python value equivalent to `v`.
pub fn dumps(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(true) => "1".to_owned(),
        Value::Bool(false) => "0".to_owned(),
        Value::Number(n) => number(n),
        Value::String(s) => s.clone(),
        Value::Array(_) | Value::Object(_) => python_json(v),
    }
}

/// `serde.loads(raw)` (without a model).
pub fn loads(raw: &str) -> Value {
    match raw {
        "null" => Value::Null,
        "1" => Value::Bool(true),
        "0" => Value::Bool(false),
        _ => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned())),
    }
}

/// `loads` of each field of a hash, in the order given.
pub fn loads_hash(fields: Vec<(String, String)>) -> Map<String, Value> {
    fields.into_iter().map(|(k, v)| (k, loads(&v))).collect()
}

/// `json.dumps(v, ensure_ascii=False)` with Python's default separators.
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, v);
    out
}

fn write_json(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n)),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, k);
                out.push_str(": ");
                write_json(out, item);
            }
            out.push('}');
        }
    }
}

/// Python's `encode_basestring`: escapes `"`, `\` and control characters
/// only (`ensure_ascii=False` keeps every other character as is).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    n.as_f64().map_or_else(|| n.to_string(), python_float)
}

/// `repr(float)`: the shortest round-trip digits, in fixed notation when the
/// exponent is in -4..16 (with at least one decimal), else `d.ddde+XX`.
pub fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let body = if (-4..16).contains(&exp) {
        let point = exp + 1;
        if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else {
            let point = point as usize;
            if point >= digits.len() {
                format!("{digits}{}.0", "0".repeat(point - digits.len()))
            } else {
                format!("{}.{}", &digits[..point], &digits[point..])
            }
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_owned()
        } else {
            format!("{first}.{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{esign}{:02}", exp.unsigned_abs())
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dumps_like_python() {
        assert_eq!(dumps(&json!(null)), "null");
        assert_eq!(dumps(&json!(true)), "1");
        assert_eq!(dumps(&json!(false)), "0");
        assert_eq!(dumps(&json!(42)), "42");
        assert_eq!(dumps(&json!(-7)), "-7");
        assert_eq!(dumps(&json!(1.0)), "1.0");
        assert_eq!(dumps(&json!("hello")), "hello");
        assert_eq!(
            dumps(&json!({"b": 1, "a": [1, 2.5, "x", true, null], "ü": "é\n"})),
            r#"{"b": 1, "a": [1, 2.5, "x", true, null], "ü": "é\n"}"#
        );
        assert_eq!(dumps(&json!([])), "[]");
        assert_eq!(dumps(&json!({})), "{}");
    }

    #[test]
    fn floats_like_python_repr() {
        for (f, py) in [
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (-0.0, "-0.0"),
            (2.71, "2.71"),
            (1.5e300, "1.5e+300"),
        ] {
            assert_eq!(python_float(f), py, "{f}");
        }
    }

    #[test]
    fn loads_like_python() {
        assert_eq!(loads("null"), json!(null));
        assert_eq!(loads("1"), json!(true));
        assert_eq!(loads("0"), json!(false));
        assert_eq!(loads("123"), json!(123));
        assert_eq!(loads("true"), json!(true));
        assert_eq!(loads("1.0"), json!(1.0));
        assert_eq!(loads(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(loads("hello"), json!("hello"));
        assert_eq!(loads("2026-11-21T10:00:00"), json!("2026-11-21T10:00:00"));
    }
}

/// Values a plugin or another client controls: any finite float reads back
/// as itself, and any JSON document stored and read back keeps its
/// structure (the library's documented lossy cases aside).
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("[a-z\"\\\\é]{0,4}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn floats_read_back_as_themselves(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let text = python_float(f);
            prop_assert_eq!(text.parse::<f64>().ok(), Some(f), "{}", text);
        }

        #[test]
        fn documents_keep_their_structure(v in json()) {
            let stored = python_json(&v);
            let back: Value = serde_json::from_str(&stored).expect("python_json writes JSON");
            prop_assert_eq!(back, v, "{}", stored);
        }

        #[test]
        fn loads_never_panics(raw in "\\PC{0,40}") {
            let _ = dumps(&loads(&raw));
        }
    }
}
