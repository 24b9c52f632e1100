//! The canonical byte encoding of an audit event, owned by riskid: every value is typed and
//! length-prefixed, object keys are sorted, and floats are written as their IEEE-754 bits,
//! so the bytes (and so the hashes) depend on no library's formatting or feature flags.

use serde_json::Value;

use super::NewEvent;

fn bytes(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(b.len() as u64).to_be_bytes());
    out.extend_from_slice(b);
}

fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(b'n'),
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push(b'i');
                out.extend_from_slice(&i.to_be_bytes());
            } else if let Some(u) = n.as_u64() {
                out.push(b'u');
                out.extend_from_slice(&u.to_be_bytes());
            } else {
                out.push(b'd');
                out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_bits().to_be_bytes());
            }
        }
        Value::String(s) => bytes(out, b's', s.as_bytes()),
        Value::Array(items) => {
            out.push(b'[');
            out.extend_from_slice(&(items.len() as u64).to_be_bytes());
            for i in items {
                value(out, i);
            }
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            out.extend_from_slice(&(keys.len() as u64).to_be_bytes());
            for k in keys {
                bytes(out, b'k', k.as_bytes());
                value(out, &map[k]);
            }
        }
    }
}

/// The bytes an event's hash is computed over.
pub fn event(seq: u64, e: &NewEvent, prev_hash: &str) -> Vec<u8> {
    let mut out = b"riskid-audit-v2\0".to_vec();
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&e.at.to_be_bytes());
    out.extend_from_slice(&e.actor_key_id.to_be_bytes());
    bytes(&mut out, b's', e.actor_role.as_bytes());
    bytes(&mut out, b's', e.action.as_str().as_bytes());
    match &e.school_urn {
        Some(u) => bytes(&mut out, b's', u.as_bytes()),
        None => out.push(b'n'),
    }
    bytes(&mut out, b's', e.subject.as_bytes());
    value(&mut out, &e.details);
    bytes(&mut out, b's', prev_hash.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_unambiguous() {
        let enc = |v: Value| {
            let mut out = Vec::new();
            value(&mut out, &v);
            out
        };
        assert_ne!(enc(serde_json::json!(["ab", "c"])), enc(serde_json::json!(["a", "bc"])));
        assert_ne!(enc(serde_json::json!(1)), enc(serde_json::json!(1.0)));
        assert_ne!(enc(serde_json::json!("1")), enc(serde_json::json!(1)));
        assert_eq!(enc(serde_json::json!({"b": 1, "a": 2})), enc(serde_json::json!({"a": 2, "b": 1})));
    }
}
