//! A small JSON Schema checker for the keywords `src/api/openapi.json` uses, so that the test
//! suite can hold real answers to the document without a large validating crate.
//!
//! `KEYWORDS` lists what it understands; a test fails when the document uses anything else,
//! so a schema can never pass here only because a keyword was silently ignored. `pattern` is
//! the one keyword it does not enforce (no regex engine here); Schemathesis checks it.

use serde_json::Value;

/// Schema keywords this checker enforces or knowingly ignores (annotations and `pattern`).
pub const KEYWORDS: &[&str] = &[
    "$ref",
    "anyOf",
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "description",
    "examples",
];

/// Every keyword used by the schemas under `components/schemas` and in the operations.
pub fn keywords_used(doc: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for schema in doc["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .values()
    {
        collect(schema, &mut found);
    }
    found.sort();
    found.dedup();
    found
}

fn collect(schema: &Value, found: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        return;
    };
    for (key, value) in map {
        found.push(key.clone());
        match key.as_str() {
            "properties" => value
                .as_object()
                .expect("properties object")
                .values()
                .for_each(|s| collect(s, found)),
            "items" => collect(value, found),
            "anyOf" => value
                .as_array()
                .expect("anyOf array")
                .iter()
                .for_each(|s| collect(s, found)),
            _ => {}
        }
    }
}

/// Checks `value` against `schema` (resolving `$ref` within `doc`); returns every mismatch,
/// each with the JSON pointer of the offending value.
pub fn check(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(doc, schema, value, "", &mut errors);
    errors
}

fn walk(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(target) = schema["$ref"].as_str() {
        let resolved = doc
            .pointer(target.trim_start_matches('#'))
            .expect("$ref resolves");
        return walk(doc, resolved, value, at, errors);
    }
    if let Some(options) = schema["anyOf"].as_array() {
        let fits = options.iter().any(|s| check(doc, s, value).is_empty());
        if !fits {
            errors.push(format!("{at}: {value} matches no anyOf branch"));
        }
        return;
    }
    if !type_fits(&schema["type"], value) {
        errors.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if schema.get("const").is_some_and(|c| c != value) {
        errors.push(format!("{at}: {value} is not {}", schema["const"]));
    }
    bounds(schema, value, at, errors);
    match value {
        Value::Object(map) => object(doc, schema, map, at, errors),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(doc, &schema["items"], item, &format!("{at}/{i}"), errors);
            }
        }
        _ => {}
    }
}

fn type_fits(wanted: &Value, value: &Value) -> bool {
    let fits = |name: &str| match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("unknown type {other}"),
    };
    match wanted {
        Value::Null => true,
        Value::String(name) => fits(name),
        Value::Array(names) => names.iter().filter_map(Value::as_str).any(fits),
        other => panic!("bad type keyword {other}"),
    }
}

fn bounds(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(n) = value.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|min| n < min) {
            errors.push(format!("{at}: {n} is below {}", schema["minimum"]));
        }
        if schema["maximum"].as_f64().is_some_and(|max| n > max) {
            errors.push(format!("{at}: {n} is above {}", schema["maximum"]));
        }
    }
    if let Some(text) = value.as_str() {
        let chars = text.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|min| chars < min) {
            errors.push(format!(
                "{at}: {text:?} is shorter than {}",
                schema["minLength"]
            ));
        }
        if schema["maxLength"].as_u64().is_some_and(|max| chars > max) {
            errors.push(format!(
                "{at}: {text:?} is longer than {}",
                schema["maxLength"]
            ));
        }
    }
}

fn object(
    doc: &Value,
    schema: &Value,
    map: &serde_json::Map<String, Value>,
    at: &str,
    errors: &mut Vec<String>,
) {
    let empty = serde_json::Map::new();
    let properties = schema["properties"].as_object().unwrap_or(&empty);
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().expect("required names are strings");
        if !map.contains_key(name) {
            errors.push(format!("{at}: required '{name}' is missing"));
        }
    }
    for (name, item) in map {
        match properties.get(name) {
            Some(property) => walk(doc, property, item, &format!("{at}/{name}"), errors),
            None if schema["additionalProperties"] == false => {
                errors.push(format!("{at}: '{name}' is not in the schema"));
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check;

    /// The checker itself catches what it claims to: types, nulls, enums, bounds, required
    /// and unknown properties, through `$ref` and `anyOf`.
    #[test]
    fn checker_finds_mismatches() {
        let doc = json!({"components": {"schemas": {"P": {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 1, "maximum": 3},
                "s": {"anyOf": [{"type": "string", "maxLength": 2}, {"type": "null"}]},
                "e": {"type": "string", "enum": ["a", "b"]},
            },
            "required": ["n"],
            "additionalProperties": false
        }}}});
        let schema = json!({"type": "array", "items": {"$ref": "#/components/schemas/P"}});
        assert!(check(&doc, &schema, &json!([{"n": 2, "s": null, "e": "a"}])).is_empty());
        let bad = json!([{"n": 4, "s": "abc", "e": "c", "x": 1}, {"n": 1.5}, {}]);
        let errors = check(&doc, &schema, &bad);
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(errors.iter().any(|e| e.starts_with("/0/n: 4 is above 3")));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("'x' is not in the schema"))
        );
        assert!(errors.iter().any(|e| e.starts_with("/2: required 'n'")));
    }
}
