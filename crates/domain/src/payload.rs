//! The payload a handler receives: `{event, data, previous}`.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

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

/// A payload's fields, in the order serde_json's sorted maps give them; `D` is a parsed
/// value or stored JSON text.
#[derive(Serialize)]
struct Body<'a, D: Serialize + ?Sized> {
    data: &'a D,
    event: Header<'a>,
    previous: &'a D,
}

#[derive(Serialize)]
struct Header<'a> {
    dt: String,
    events_id: &'a str,
    object_id: Option<i64>,
    stage: &'a str,
    uid: &'a str,
}

fn body<'a, D: Serialize + ?Sized>(
    header: &EventHeader<'a>,
    data: &'a D,
    previous: &'a D,
) -> Body<'a, D> {
    Body {
        data,
        event: Header {
            dt: header.dt.to_string(),
            events_id: header.events_id,
            object_id: header.object_id,
            stage: header.stage.as_str(),
            uid: header.uid,
        },
        previous,
    }
}

/// The payload exactly as a handler receives it.
pub fn payload(header: &EventHeader<'_>, data: &Value, previous: &Value) -> Value {
    serde_json::to_value(body(header, data, previous)).expect("JSON values serialise")
}

/// The payload as JSON text, from the stored JSON text of `data` and `previous`: the
/// same bytes as [`payload`] serialised, without parsing the stored text into values and
/// writing it out again — the delivery engine does this for every call.
pub fn payload_text(
    header: &EventHeader<'_>,
    data: &RawValue,
    previous: &RawValue,
) -> Box<RawValue> {
    serde_json::value::to_raw_value(&body(header, data, previous))
        .expect("JSON text and plain fields serialise")
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
    fn payload_text_is_the_payload_serialised_byte_for_byte() {
        let data = json!({"id": 7, "name": "Acme \"Ltd\" ☎", "tags": ["a"], "amount": "1.5",
                          "nested": {"z": null, "a": [1, {"y": 2, "b": 3}]}});
        let previous = json!({"name": "Old"});
        for (object_id, previous) in [(Some(7), previous), (None, json!({}))] {
            let header = EventHeader {
                dt: Timestamp::parse("2026-11-22T10:15:30.123456Z").expect("valid"),
                events_id: "clients.update",
                object_id,
                uid: "01935a1e-0000-7000-8000-000000000000",
                stage: Stage::After,
            };
            // The stored text is what the outbox wrote: the values serialised.
            let stored = |v: &Value| RawValue::from_string(v.to_string()).expect("valid JSON");
            let text = payload_text(&header, &stored(&data), &stored(&previous));
            let expected =
                serde_json::to_string(&payload(&header, &data, &previous)).expect("serialises");
            assert_eq!(text.get(), expected);
        }
    }

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
