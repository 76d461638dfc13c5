//! A Redis hash as `HGETALL` returns it: its fields and values, in the order Redis gave them.
//!
//! Read into a list rather than a `HashMap`: a session's hashes hold a handful of fields, which
//! a scan finds sooner than SipHash hashes a name, and redis-rs's conversion into a map hashed
//! every field on the way in as well (3,600 instructions of a session load's 28,000). Each
//! name and value keeps the bytes Redis sent; nothing is copied.

use ::redis::{FromRedisValue, ParsingError, Value};

/// The fields of one hash; empty when the key does not exist.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HashFields(Vec<(String, String)>);

impl HashFields {
    /// The value of `field`, if the hash has it.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, value)| value.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for HashFields {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A RESP3 map or a RESP2 flat `[field, value, …]` array, of text; `nil` is an empty hash. A
/// RESP3 attribute around the reply is passed over, as redis-rs's own conversions do.
impl FromRedisValue for HashFields {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        let value = match value {
            Value::Attribute { data, .. } => *data,
            Value::Nil => return Ok(Self::default()),
            value => value,
        };
        let pairs = value
            .into_map_iter()
            .map_err(|other| ParsingError::from(format!("not a hash reply: {other:?}")))?;
        pairs
            .map(|(field, value)| {
                Ok((
                    String::from_redis_value(field)?,
                    String::from_redis_value(value)?,
                ))
            })
            .collect::<Result<_, ParsingError>>()
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn reads_a_resp3_map_and_a_resp2_array_alike() {
        let map = Value::Map(vec![(bulk("core"), bulk("{}")), (bulk("kept"), bulk("7"))]);
        let array = Value::Array(vec![bulk("core"), bulk("{}"), bulk("kept"), bulk("7")]);
        let from_map = HashFields::from_redis_value(map).unwrap();
        assert_eq!(from_map, HashFields::from_redis_value(array).unwrap());
        assert_eq!(from_map.get("kept"), Some("7"));
        assert_eq!(from_map.get("core"), Some("{}"));
        assert_eq!(from_map.get("log"), None);
        let fields: Vec<_> = from_map.into_iter().map(|(name, _)| name).collect();
        assert_eq!(fields, ["core", "kept"], "in the order Redis gave them");
    }

    #[test]
    fn a_missing_key_is_an_empty_hash() {
        let empty = HashFields::from_redis_value(Value::Map(vec![])).unwrap();
        assert!(empty.is_empty());
        assert!(
            HashFields::from_redis_value(Value::Array(vec![]))
                .unwrap()
                .is_empty()
        );
        assert!(HashFields::from_redis_value(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn anything_but_a_hash_of_text_is_refused() {
        let odd = Value::Array(vec![bulk("core")]);
        assert!(HashFields::from_redis_value(odd).is_err());
        assert!(HashFields::from_redis_value(bulk("a string")).is_err());
        let binary = Value::Map(vec![(bulk("core"), Value::BulkString(vec![0xff, 0xfe]))]);
        assert!(HashFields::from_redis_value(binary).is_err());
    }
}
