//! `Mcp-Param-{Name}` headers (2026-07-28, SEP-2243): a tool may mark properties of its
//! `inputSchema` with `"x-mcp-header": "<Name>"`, and a call then mirrors each such argument in
//! a header, so that intermediaries can route on it without reading the body.
//!
//! The gateway is both a server that reads the body (it must check every annotated header
//! against the arguments: present when the argument is, equal to it once decoded) and a
//! client of modern upstreams (it must send them, after renaming the tool). The rules of
//! which properties count are the text's: a chain of `properties` keys from the schema's
//! root; an annotation anywhere else is ignored.

use serde_json::Value;

use super::ModernError;
use super::era::{decode_header_value, encode_header_value};

/// The prefix of the header names.
pub const HEADER_PREFIX: &str = "mcp-param-";
/// Most annotated properties read from one schema, and how deep they are looked for.
const MAX_ANNOTATIONS: usize = 32;
const MAX_DEPTH: usize = 8;

/// One annotated argument: where it sits in the arguments, and its header's name part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeader {
    pub path: Vec<String>,
    pub name: String,
}

impl ParamHeader {
    /// The header's full name, in lower case.
    pub fn header_name(&self) -> String {
        format!("{HEADER_PREFIX}{}", self.name.to_ascii_lowercase())
    }
}

/// The annotated properties of a tool's `inputSchema`.
pub fn annotations(input_schema: &Value) -> Vec<ParamHeader> {
    let mut found = Vec::new();
    collect(input_schema, &mut Vec::new(), &mut found);
    found
}

fn collect(schema: &Value, path: &mut Vec<String>, found: &mut Vec<ParamHeader>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, property) in properties {
        if found.len() >= MAX_ANNOTATIONS {
            return;
        }
        path.push(key.clone());
        if let Some(name) = property.get("x-mcp-header").and_then(Value::as_str) {
            found.push(ParamHeader {
                path: path.clone(),
                name: name.to_owned(),
            });
        } else if path.len() < MAX_DEPTH {
            collect(property, path, found);
        }
        path.pop();
    }
}

/// The text a header carries for an argument: strings as they are, integers in decimal,
/// booleans in lower case; `None` for anything else (absent, null, objects, fractions).
fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| format!("{}", f as i64)),
        _ => None,
    }
}

fn argument<'a>(arguments: Option<&'a Value>, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(arguments?, |value, key| value.get(key))
        .filter(|v| !v.is_null())
}

/// The headers a call with `arguments` carries for these annotations, encoded.
pub fn outgoing(annotations: &[ParamHeader], arguments: Option<&Value>) -> Vec<(String, String)> {
    annotations
        .iter()
        .filter_map(|a| {
            let text = header_text(argument(arguments, &a.path)?)?;
            Some((a.header_name(), encode_header_value(&text)))
        })
        .collect()
}

/// Checks the headers a client sent against its arguments: each annotated argument that is
/// present must come with its header, equal once decoded (integers compared as numbers).
/// `received` maps lower-case header names to their values.
pub fn check(
    annotations: &[ParamHeader],
    arguments: Option<&Value>,
    received: &[(String, String)],
) -> Result<(), ModernError> {
    for annotation in annotations {
        let header = annotation.header_name();
        let sent = received
            .iter()
            .find(|(name, _)| *name == header)
            .map(|(_, v)| v);
        let Some(expected) = argument(arguments, &annotation.path).and_then(header_text) else {
            continue;
        };
        let sent = sent.ok_or_else(|| {
            ModernError::HeaderMismatch(format!(
                "the Mcp-Param-{} header is required: the arguments carry {}",
                annotation.name,
                annotation.path.join(".")
            ))
        })?;
        let decoded = decode_header_value(sent).map_err(|reason| {
            ModernError::HeaderMismatch(format!("Mcp-Param-{}: {reason}", annotation.name))
        })?;
        if !same_value(&decoded, &expected) {
            return Err(ModernError::HeaderMismatch(format!(
                "Mcp-Param-{} header value {decoded:?} does not match body value {expected:?}",
                annotation.name
            )));
        }
    }
    Ok(())
}

fn same_value(header: &str, body: &str) -> bool {
    if header == body {
        return true;
    }
    match (header.parse::<f64>(), body.parse::<f64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "limit": {"type": "integer", "x-mcp-header": "Limit"},
            "query": {"type": "string"},
            "options": {"type": "object", "properties": {
                "dry": {"type": "boolean", "x-mcp-header": "Dry"}
            }},
            "list": {"type": "array", "items": {"x-mcp-header": "Ignored"}}
        }})
    }

    #[test]
    fn finds_annotations_along_property_chains_only() {
        let found = annotations(&schema());
        let names: Vec<&str> = found.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["Limit", "Dry", "Region"]);
        assert_eq!(found[1].path, ["options", "dry"]);
    }

    #[test]
    fn outgoing_headers_mirror_the_present_arguments() {
        let arguments = json!({"region": "Hello, 世界", "limit": 42, "options": {"dry": true}});
        let headers = outgoing(&annotations(&schema()), Some(&arguments));
        assert_eq!(
            headers,
            [
                ("mcp-param-limit".to_owned(), "42".to_owned()),
                ("mcp-param-dry".to_owned(), "true".to_owned()),
                (
                    "mcp-param-region".to_owned(),
                    "=?base64?SGVsbG8sIOS4lueVjA==?=".to_owned()
                ),
            ]
        );
        assert!(outgoing(&annotations(&schema()), Some(&json!({"region": null}))).is_empty());
    }

    #[test]
    fn received_headers_must_match_the_arguments() {
        let found = annotations(&schema());
        let arguments = json!({"region": "Hello", "limit": 42});
        let good = [
            (
                "mcp-param-region".to_owned(),
                "=?base64?SGVsbG8=?=".to_owned(),
            ),
            ("mcp-param-limit".to_owned(), "42.0".to_owned()),
        ];
        assert_eq!(check(&found, Some(&arguments), &good), Ok(()));
        let missing = [good[1].clone()];
        assert!(check(&found, Some(&arguments), &missing).is_err());
        let wrong = [
            ("mcp-param-region".to_owned(), "Bye".to_owned()),
            good[1].clone(),
        ];
        assert!(check(&found, Some(&arguments), &wrong).is_err());
        let bad_base64 = [
            (
                "mcp-param-region".to_owned(),
                "=?base64?SGVs!!!bG8=?=".to_owned(),
            ),
            good[1].clone(),
        ];
        assert!(check(&found, Some(&arguments), &bad_base64).is_err());
        assert_eq!(
            check(&found, Some(&json!({})), &[]),
            Ok(()),
            "absent arguments need no header"
        );
    }
}
