//! Context merging: how the outputs of a task's dependencies become its
//! input, and how an execution's last outputs become its final context.
//!
//! Contexts are folded left to right (the callers pass them in topological
//! order) with a deep merge: two lists give the first, then each element of
//! the second not already in the result; two objects are merged key by key,
//! recursively; anything else (a scalar, `null`, two values of different
//! types) gives the later value. Equality is JSON equality, so `1` and `1.0`
//! differ and so do `true` and `1`. Two branches appending to one list
//! therefore both keep their entries, where a shallow merge dropped one.

use serde_json::Value;

use crate::engine::model::Context;

/// Folds `contexts`, left to right, into one.
pub(crate) fn merge<'a>(contexts: impl Iterator<Item = &'a Context>) -> Context {
    let mut merged = Context::new();
    for ctx in contexts {
        merge_into(&mut merged, ctx);
    }
    merged
}

fn merge_into(existing: &mut Context, new: &Context) {
    for (key, value) in new {
        match existing.get_mut(key) {
            Some(current) => merge_value(current, value),
            None => {
                existing.insert(key.clone(), value.clone());
            }
        }
    }
}

fn merge_value(existing: &mut Value, new: &Value) {
    match (existing, new) {
        (Value::Array(items), Value::Array(more)) => {
            // Checked against the growing result: duplicates inside `new`
            // collapse, those already inside `existing` stay.
            for item in more {
                if !items.contains(item) {
                    items.push(item.clone());
                }
            }
        }
        (Value::Object(fields), Value::Object(more)) => merge_into(fields, more),
        (current, new) => *current = new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx(value: Value) -> Context {
        value.as_object().unwrap().clone()
    }

    fn fold(values: Vec<Value>) -> Value {
        let contexts: Vec<Context> = values.into_iter().map(ctx).collect();
        Value::Object(merge(contexts.iter()))
    }

    #[test]
    fn lists_are_joined_without_adding_what_is_there() {
        assert_eq!(fold(vec![json!({"l": [1, 2]}), json!({"l": [2, 3, 3]})]), json!({"l": [1, 2, 3]}));
        assert_eq!(fold(vec![json!({"l": [1, 1]}), json!({"l": [1]})]), json!({"l": [1, 1]}), "duplicates already there stay");
        assert_eq!(fold(vec![json!({"l": [1]}), json!({"l": [1.0, true]})]), json!({"l": [1, 1.0, true]}), "JSON equality");
    }

    #[test]
    fn objects_are_merged_key_by_key_at_every_depth() {
        let merged = fold(vec![json!({"o": {"a": 1, "in": {"x": [1]}}}), json!({"o": {"b": 2, "in": {"x": [2], "y": 0}}})]);
        assert_eq!(merged, json!({"o": {"a": 1, "b": 2, "in": {"x": [1, 2], "y": 0}}}));
    }

    #[test]
    fn anything_else_takes_the_later_value() {
        assert_eq!(fold(vec![json!({"k": 1}), json!({"k": 2})]), json!({"k": 2}));
        assert_eq!(fold(vec![json!({"k": [1]}), json!({"k": {"a": 1}})]), json!({"k": {"a": 1}}), "type mismatch");
        assert_eq!(fold(vec![json!({"k": {"a": 1}}), json!({"k": null})]), json!({"k": null}));
        assert_eq!(fold(vec![json!({"a": 1}), json!({"b": 2})]), json!({"a": 1, "b": 2}));
        assert_eq!(fold(vec![]), json!({}));
    }
}
