//! The payload a handler receives: `{event, data, previous}`.

use serde_json::{json, Map, Value};

use crate::catalogue::Stage;
use crate::Timestamp;

/// The header of a payload: which event, when, about which object.
#[derive(Debug, Clone, PartialEq)]
pub struct EventHeader<'a> {
    pub dt: Timestamp,
    pub events_id: &'a str,
    pub object_id: Option<i64>,
    pub uid: &'a str,
    pub stage: Stage,
}

/// The payload exactly as a handler receives it.
pub fn payload(header: &EventHeader<'_>, data: &Value, previous: &Value) -> Value {
    json!({
        "event": {
            "dt": header.dt.to_string(),
            "events_id": header.events_id,
            "object_id": header.object_id,
            "uid": header.uid,
            "stage": header.stage.as_str(),
        },
        "data": data,
        "previous": previous,
    })
}

/// Fields left out of `previous`: they change with every write and would hide the
/// change that matters.
const NOT_COMPARED: &[&str] = &["updated_at"];

/// Old values of the top-level fields that differ between `old` and `new` objects.
pub fn previous_of(old: &Value, new: &Value) -> Map<String, Value> {
    let mut previous = Map::new();
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return previous;
    };
    for (key, old_value) in old {
        if NOT_COMPARED.contains(&key.as_str()) {
            continue;
        }
        if new.get(key) != Some(old_value) {
            previous.insert(key.clone(), old_value.clone());
        }
    }
    previous
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn previous_holds_only_changed_fields() {
        let old = json!({"id": 1, "name": "Acme Ltd", "updated_at": "a", "tags": []});
        let new = json!({"id": 1, "name": "Acme", "updated_at": "b", "tags": []});
        assert_eq!(
            Value::Object(previous_of(&old, &new)),
            json!({"name": "Acme Ltd"})
        );
    }
}
