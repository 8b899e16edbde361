//! The event catalogue of the Provisioning API: every event id billhook raises, its group,
//! a description, the stages a handler may subscribe to, and a realistic sample payload.
//!
//! It also holds the rules for handler event patterns: `*`, an exact event id, or a
//! prefix pattern `<prefix>.*` (such as `clients.*` or `dids.*`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The stage at which a handler is called for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Called synchronously before the change is written; may modify or forbid it.
    Before,
    /// Notified durably, in order and with retries, after the change is committed.
    After,
}

impl Stage {
    /// The stage's name as used in JSON and in the API (`"before"` or `"after"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Before => "before",
            Stage::After => "after",
        }
    }
}

impl crate::entities::Wire for Stage {
    fn as_str(self) -> &'static str {
        Stage::as_str(self)
    }
    fn parse(s: &str) -> Option<Self> {
        BOTH_STAGES
            .iter()
            .copied()
            .find(|stage| stage.as_str() == s)
    }
    fn expected() -> String {
        let names: Vec<&str> = BOTH_STAGES.iter().map(|s| s.as_str()).collect();
        format!("must be one of: {}", names.join(", "))
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const BOTH_STAGES: &[Stage] = &[Stage::Before, Stage::After];
const AFTER_ONLY: &[Stage] = &[Stage::After];

/// One entry of the event catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType {
    /// The event id, as carried in `event.events_id` (e.g. `clients.update`).
    pub id: &'static str,
    /// The group the event belongs to (e.g. `clients`, `accounts`, `dids`).
    pub group: &'static str,
    /// A short English description of what happened.
    pub description: &'static str,
    /// Whether before-stage handlers may subscribe to this event (derived events are
    /// after-only).
    pub before_capable: bool,
}

impl EventType {
    /// The stages a handler may use for this event: `[Before, After]` when it is
    /// before-capable, else `[After]`.
    pub fn stages(&self) -> &'static [Stage] {
        if self.before_capable {
            BOTH_STAGES
        } else {
            AFTER_ONLY
        }
    }

    /// Whether the action raising it makes a new object: in the before stage, nothing
    /// is stored yet, so its payload has no `object_id` and its `data` no `id`.
    pub fn creates(&self) -> bool {
        CREATING.contains(&self.id)
    }

    /// [`EventType::sample`] as a handler of `stage` receives it.
    pub fn sample_for(&self, stage: Stage) -> Value {
        let mut sample = self.sample();
        sample["event"]["stage"] = Value::String(stage.as_str().into());
        if stage == Stage::Before && self.creates() {
            sample["event"]["object_id"] = Value::Null;
            sample["data"]["id"] = Value::Null;
        }
        sample
    }

    /// A realistic, complete after-stage payload for this event, in exactly the shape
    /// handlers receive: `{"event": {...}, "data": {...}, "previous": {...}}`.
    pub fn sample(&self) -> Value {
        let (object_id, data, mut previous) = sample_parts(self.id);
        // Real payloads leave `updated_at` out of `previous` (it changes on every write
        // and would hide the change that matters); samples show what handlers receive.
        if let Some(p) = previous.as_object_mut() {
            p.remove("updated_at");
        }
        let index = EVENT_TYPES
            .iter()
            .position(|e| e.id == self.id)
            .unwrap_or(0);
        json!({
            "event": {
                "dt": SAMPLE_EVENT_DT,
                "events_id": self.id,
                "object_id": object_id,
                "uid": sample_uid(index),
                "stage": Stage::After.as_str(),
            },
            "data": data,
            "previous": previous,
        })
    }
}

/// The events of the actions that make a new object (see [`EventType::creates`]).
const CREATING: [&str; 6] = [
    "clients.create",
    "clients.accounts.create",
    "clients.subscriptions.assign",
    "dids.create",
    "accounting.charges.create",
    "accounting.payments.create",
];

/// Shorthand constructor used to build [`EVENT_TYPES`].
const fn ev(
    id: &'static str,
    group: &'static str,
    description: &'static str,
    before_capable: bool,
) -> EventType {
    EventType {
        id,
        group,
        description,
        before_capable,
    }
}

/// The whole catalogue: the 35 events billhook raises, in the order of the contract.
pub static EVENT_TYPES: &[EventType] = &[
    ev(
        "clients.create",
        "clients",
        "The client has been created",
        true,
    ),
    ev(
        "clients.update",
        "clients",
        "The client's details have been updated",
        true,
    ),
    ev(
        "clients.archive",
        "clients",
        "The client has been archived",
        true,
    ),
    ev(
        "clients.delete",
        "clients",
        "The client has been completely deleted (not to be confused with archived)",
        true,
    ),
    ev(
        "clients.balance_zero",
        "clients",
        "The client's balance became <= 0",
        false,
    ),
    ev(
        "clients.balance_notzero",
        "clients",
        "The client's balance became > 0",
        false,
    ),
    ev(
        "clients.custom_fields.update",
        "clients",
        "The client's custom fields have been updated",
        true,
    ),
    ev(
        "clients.accounts.create",
        "accounts",
        "The account has been created",
        true,
    ),
    ev(
        "clients.accounts.update",
        "accounts",
        "The account's details have been updated",
        true,
    ),
    ev(
        "clients.accounts.delete",
        "accounts",
        "The account has been completely deleted",
        true,
    ),
    ev(
        "clients.subscriptions.assign",
        "subscriptions",
        "The subscription has been assigned",
        true,
    ),
    ev(
        "clients.subscriptions.activate",
        "subscriptions",
        "The subscription has been activated",
        true,
    ),
    ev(
        "clients.subscriptions.deactivate",
        "subscriptions",
        "The subscription has been deactivated",
        true,
    ),
    ev(
        "clients.subscriptions.renew",
        "subscriptions",
        "The subscription has been renewed",
        true,
    ),
    ev(
        "clients.subscriptions.close",
        "subscriptions",
        "The subscription has been closed",
        true,
    ),
    ev("dids.create", "dids", "The DID has been created", true),
    ev("dids.update", "dids", "The DID has been updated", true),
    ev("dids.activate", "dids", "The DID has been activated", true),
    ev("dids.stock", "dids", "The DID has been put in stock", true),
    ev("dids.block", "dids", "The DID has been blocked", true),
    ev("dids.reserve", "dids", "The DID has been reserved", true),
    ev("dids.hold", "dids", "The DID has been put on hold", true),
    ev("dids.archive", "dids", "The DID has been archived", true),
    ev(
        "email_rates_manager.import",
        "email_rates_manager",
        "The import file has been prepared for further processing by the handler's task, \
         and the built-in import was stopped",
        false,
    ),
    ev(
        "email_rates_manager.rate_tables_no_match",
        "email_rates_manager",
        "No rate table matches the received email",
        false,
    ),
    ev(
        "email_rates_manager.no_attachments",
        "email_rates_manager",
        "No attachments have been identified in the received email",
        false,
    ),
    ev(
        "email_rates_manager.file_processing_error",
        "email_rates_manager",
        "The attached file could not be processed",
        false,
    ),
    ev(
        "importd.process_success",
        "importd",
        "The import attempt was successful",
        false,
    ),
    ev(
        "importd.process_failed",
        "importd",
        "The import attempt has failed",
        false,
    ),
    ev(
        "accounting.charges.create",
        "charges",
        "The transaction of type charge has been created",
        true,
    ),
    ev(
        "accounting.charges.update",
        "charges",
        "The transaction of type charge has been edited",
        true,
    ),
    ev(
        "accounting.charges.delete",
        "charges",
        "The transaction of type charge has been removed",
        true,
    ),
    ev(
        "accounting.payments.create",
        "payments",
        "The transaction of type payment has been created",
        true,
    ),
    ev(
        "accounting.payments.update",
        "payments",
        "The transaction of type payment has been edited",
        true,
    ),
    ev(
        "accounting.payments.delete",
        "payments",
        "The transaction of type payment has been removed",
        true,
    ),
];

/// The catalogue entry of an event id, if it exists.
pub fn find(id: &str) -> Option<&'static EventType> {
    EVENT_TYPES.iter().find(|e| e.id == id)
}

/// Whether `pattern` is a valid handler event: `*`, an exact event id, or `<prefix>.*`
/// where at least one event id starts with `<prefix>.`.
pub fn is_valid_pattern(pattern: &str) -> bool {
    if pattern == "*" || find(pattern).is_some() {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) if !prefix.is_empty() && !prefix.contains('*') => {
            EVENT_TYPES.iter().any(|e| pattern_matches(pattern, e.id))
        }
        _ => false,
    }
}

/// Whether a handler subscribed to `pattern` receives `event_id`: `*` matches every
/// event, `x.*` matches ids starting with `x.`, anything else must be equal.
pub fn pattern_matches(pattern: &str, event_id: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => event_id
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| !rest.is_empty()),
        None => pattern == event_id,
    }
}

/// Whether a before-stage handler may subscribe to `pattern`: true when at least one
/// event it matches is before-capable (`clients.*` is accepted, `clients.balance_zero`
/// and `importd.*` are not).
pub fn pattern_allows_before(pattern: &str) -> bool {
    EVENT_TYPES
        .iter()
        .any(|e| e.before_capable && pattern_matches(pattern, e.id))
}

// ---------------------------------------------------------------------------------------
// Sample payloads
// ---------------------------------------------------------------------------------------

/// The `event.dt` of every sample.
const SAMPLE_EVENT_DT: &str = "2026-11-22T10:15:30.123456Z";
/// When the sample objects were first created.
const CREATED: &str = "2026-11-01T09:00:00.000000Z";
/// When the sample objects were last changed before the sampled event.
const EARLIER: &str = "2026-11-15T14:20:05.250000Z";
/// When the sample objects are changed by the sampled event.
const NOW: &str = SAMPLE_EVENT_DT;

const CLIENT_ID: i64 = 12;
const ACCOUNT_ID: i64 = 34;
const PACKAGE_ID: i64 = 3;
const SUBSCRIPTION_ID: i64 = 56;
const DID_ID: i64 = 78;
const CHARGE_ID: i64 = 501;
const PAYMENT_ID: i64 = 502;
const RATE_TABLE_ID: i64 = 7;
const RATE_TABLE_NAME: &str = "Carrier A - Wholesale";
const IMPORT_ID: i64 = 91;

/// A UUID v7 for the sample at `index`: its timestamp is [`SAMPLE_EVENT_DT`] in
/// milliseconds, its version nibble 7 and its variant bits `10`.
fn sample_uid(index: usize) -> String {
    format!("01a202c0-f64b-7a3c-9{index:03x}-5e2f8b140{index:03x}")
}

/// `(object_id, data, previous)` of the sample of `id`.
fn sample_parts(id: &str) -> (Value, Value, Value) {
    let empty = || json!({});
    match id {
        "clients.create" => {
            let mut c = client();
            set(&mut c, "balance", json!("0"));
            set(&mut c, "custom_fields", json!({}));
            set(&mut c, "updated_at", json!(NOW));
            set(&mut c, "created_at", json!(NOW));
            (json!(CLIENT_ID), c, empty())
        }
        "clients.update" => {
            let mut c = client();
            set(&mut c, "updated_at", json!(NOW));
            let previous = json!({
                "name": "Acme Ltd",
                "email": "billing@acme.example",
                "updated_at": EARLIER,
            });
            (json!(CLIENT_ID), c, previous)
        }
        "clients.archive" => {
            let mut c = client();
            set(&mut c, "status", json!("archived"));
            set(&mut c, "balance", json!("0"));
            set(&mut c, "updated_at", json!(NOW));
            let previous = json!({"status": "active", "updated_at": EARLIER});
            (json!(CLIENT_ID), c, previous)
        }
        "clients.delete" => {
            let mut c = client();
            set(&mut c, "status", json!("archived"));
            set(&mut c, "balance", json!("0"));
            (json!(CLIENT_ID), c, empty())
        }
        "clients.balance_zero" => {
            let mut c = client();
            set(&mut c, "balance", json!("-14.5"));
            set(&mut c, "updated_at", json!(NOW));
            let previous = json!({"balance": "10.5", "updated_at": EARLIER});
            (json!(CLIENT_ID), c, previous)
        }
        "clients.balance_notzero" => {
            let mut c = client();
            set(&mut c, "updated_at", json!(NOW));
            let previous = json!({"balance": "-14.5", "updated_at": EARLIER});
            (json!(CLIENT_ID), c, previous)
        }
        "clients.custom_fields.update" => {
            let mut c = client();
            set(&mut c, "updated_at", json!(NOW));
            let previous = json!({
                "custom_fields": {"crm_id": "A-1042", "sales_rep": "john"},
                "updated_at": EARLIER,
            });
            (json!(CLIENT_ID), c, previous)
        }
        "clients.accounts.create" => {
            let mut a = account();
            set(&mut a, "created_at", json!(NOW));
            set(&mut a, "updated_at", json!(NOW));
            (json!(ACCOUNT_ID), a, empty())
        }
        "clients.accounts.update" => {
            let mut a = account();
            set(&mut a, "updated_at", json!(NOW));
            let previous = json!({
                "ips": ["198.51.100.10"],
                "updated_at": EARLIER,
            });
            (json!(ACCOUNT_ID), a, previous)
        }
        "clients.accounts.delete" => {
            let mut a = account();
            set(&mut a, "enabled", json!(false));
            (json!(ACCOUNT_ID), a, empty())
        }
        "clients.subscriptions.assign" => {
            let mut s = subscription();
            set(&mut s, "status", json!("pending"));
            set(&mut s, "period_start", Value::Null);
            set(&mut s, "period_end", Value::Null);
            set(&mut s, "start_dt", json!("2026-12-01T00:00:00.000000Z"));
            set(&mut s, "created_at", json!(NOW));
            set(&mut s, "updated_at", json!(NOW));
            (json!(SUBSCRIPTION_ID), s, empty())
        }
        "clients.subscriptions.activate" => {
            let mut s = subscription();
            set(&mut s, "updated_at", json!(NOW));
            let previous = json!({
                "status": "pending",
                "period_start": null,
                "period_end": null,
                "updated_at": EARLIER,
            });
            (json!(SUBSCRIPTION_ID), s, previous)
        }
        "clients.subscriptions.deactivate" => {
            let mut s = subscription();
            set(&mut s, "status", json!("inactive"));
            set(&mut s, "updated_at", json!(NOW));
            let previous = json!({"status": "active", "updated_at": EARLIER});
            (json!(SUBSCRIPTION_ID), s, previous)
        }
        "clients.subscriptions.renew" => {
            let mut s = subscription();
            set(&mut s, "period_start", json!("2026-12-01T00:00:00.000000Z"));
            set(&mut s, "period_end", json!("2027-01-01T00:00:00.000000Z"));
            set(&mut s, "updated_at", json!(NOW));
            let previous = json!({
                "period_start": "2026-11-01T00:00:00.000000Z",
                "period_end": "2026-12-01T00:00:00.000000Z",
                "updated_at": EARLIER,
            });
            (json!(SUBSCRIPTION_ID), s, previous)
        }
        "clients.subscriptions.close" => {
            let mut s = subscription();
            set(&mut s, "status", json!("closed"));
            set(&mut s, "updated_at", json!(NOW));
            let previous = json!({"status": "active", "updated_at": EARLIER});
            (json!(SUBSCRIPTION_ID), s, previous)
        }
        "dids.create" => {
            let mut d = did_unassigned("stock");
            set(&mut d, "created_at", json!(NOW));
            set(&mut d, "updated_at", json!(NOW));
            (json!(DID_ID), d, empty())
        }
        "dids.update" => {
            let mut d = did_active();
            set(&mut d, "accounts_id", json!(35));
            set(&mut d, "updated_at", json!(NOW));
            let previous = json!({"accounts_id": ACCOUNT_ID, "updated_at": EARLIER});
            (json!(DID_ID), d, previous)
        }
        "dids.activate" => {
            let mut d = did_active();
            set(&mut d, "updated_at", json!(NOW));
            let previous = json!({
                "status": "reserved",
                "clients_id": null,
                "accounts_id": null,
                "updated_at": EARLIER,
            });
            (json!(DID_ID), d, previous)
        }
        "dids.stock" => {
            let mut d = did_unassigned("stock");
            set(&mut d, "updated_at", json!(NOW));
            let previous = json!({
                "status": "hold",
                "clients_id": CLIENT_ID,
                "accounts_id": ACCOUNT_ID,
                "hold_until": "2026-11-22T10:15:00.000000Z",
                "status_after_hold": "stock",
                "updated_at": EARLIER,
            });
            (json!(DID_ID), d, previous)
        }
        "dids.block" => {
            let mut d = did_active();
            set(&mut d, "status", json!("blocked"));
            set(&mut d, "updated_at", json!(NOW));
            let previous = json!({"status": "active", "updated_at": EARLIER});
            (json!(DID_ID), d, previous)
        }
        "dids.reserve" => {
            let mut d = did_unassigned("reserved");
            set(&mut d, "updated_at", json!(NOW));
            let previous = json!({"status": "stock", "updated_at": EARLIER});
            (json!(DID_ID), d, previous)
        }
        "dids.hold" => {
            let mut d = did_active();
            set(&mut d, "status", json!("hold"));
            set(&mut d, "hold_until", json!("2026-12-22T10:15:30.123456Z"));
            set(&mut d, "status_after_hold", json!("stock"));
            set(&mut d, "updated_at", json!(NOW));
            let previous = json!({
                "status": "active",
                "hold_until": null,
                "status_after_hold": null,
                "updated_at": EARLIER,
            });
            (json!(DID_ID), d, previous)
        }
        "dids.archive" => {
            let mut d = did_unassigned("archived");
            set(&mut d, "updated_at", json!(NOW));
            let previous = json!({"status": "stock", "updated_at": EARLIER});
            (json!(DID_ID), d, previous)
        }
        "email_rates_manager.import" => {
            let mut m = email_message();
            set(&mut m, "size", json!(SAMPLE_CSV_SIZE));
            set(&mut m, "content_base64", json!(SAMPLE_CSV_BASE64));
            set(&mut m, "currency", json!("USD"));
            (json!(RATE_TABLE_ID), m, empty())
        }
        "email_rates_manager.rate_tables_no_match" => {
            let mut m = email_message();
            set(&mut m, "sender", json!("offers@unknown-carrier.example"));
            set(&mut m, "subject", json!("Special offer: new routes"));
            set(&mut m, "rate_tables_id", Value::Null);
            set(&mut m, "rate_table", Value::Null);
            set(&mut m, "file_name", Value::Null);
            set(
                &mut m,
                "reason",
                json!("No rate table's email_sender and email_subject match the message"),
            );
            (Value::Null, m, empty())
        }
        "email_rates_manager.no_attachments" => {
            let mut m = email_message();
            set(&mut m, "file_name", Value::Null);
            set(
                &mut m,
                "reason",
                json!("The message has no CSV or ZIP attachment"),
            );
            (json!(RATE_TABLE_ID), m, empty())
        }
        "email_rates_manager.file_processing_error" => {
            let mut m = email_message();
            set(&mut m, "file_name", json!("rates_2026-11-22.zip"));
            set(
                &mut m,
                "reason",
                json!("The ZIP archive cannot be read: invalid central directory"),
            );
            (json!(RATE_TABLE_ID), m, empty())
        }
        "importd.process_success" => (json!(IMPORT_ID), import_job(true), empty()),
        "importd.process_failed" => (json!(IMPORT_ID), import_job(false), empty()),
        "accounting.charges.create" => {
            let mut t = transaction(CHARGE_ID, "Monthly fee: Business 100 (Dec 2026)");
            set(&mut t, "created_at", json!(NOW));
            set(&mut t, "updated_at", json!(NOW));
            (json!(CHARGE_ID), t, empty())
        }
        "accounting.charges.update" => {
            let mut t = transaction(CHARGE_ID, "Monthly fee: Business 100 (Dec 2026)");
            set(&mut t, "updated_at", json!(NOW));
            let previous = json!({"amount": "20", "updated_at": EARLIER});
            (json!(CHARGE_ID), t, previous)
        }
        "accounting.charges.delete" => {
            let t = transaction(CHARGE_ID, "Monthly fee: Business 100 (Dec 2026)");
            (json!(CHARGE_ID), t, empty())
        }
        "accounting.payments.create" => {
            let mut t = transaction(PAYMENT_ID, "Bank transfer, ref. INV-2026-1187");
            set(&mut t, "created_at", json!(NOW));
            set(&mut t, "updated_at", json!(NOW));
            (json!(PAYMENT_ID), t, empty())
        }
        "accounting.payments.update" => {
            let mut t = transaction(PAYMENT_ID, "Bank transfer, ref. INV-2026-1187");
            set(&mut t, "updated_at", json!(NOW));
            let previous = json!({"notes": "Bank transfer", "updated_at": EARLIER});
            (json!(PAYMENT_ID), t, previous)
        }
        "accounting.payments.delete" => {
            let t = transaction(PAYMENT_ID, "Bank transfer, ref. INV-2026-1187");
            (json!(PAYMENT_ID), t, empty())
        }
        _ => (Value::Null, empty(), empty()),
    }
}

/// Replaces (or adds) one field of a sample object.
fn set(object: &mut Value, key: &str, value: Value) {
    if let Value::Object(map) = object {
        map.insert(key.to_owned(), value);
    }
}

fn client() -> Value {
    json!({
        "id": CLIENT_ID,
        "name": "Acme Telecom",
        "status": "active",
        "currency": "USD",
        "balance": "10.5",
        "credit": "0",
        "email": "billing@acme-telecom.example",
        "tags": ["wholesale", "eu"],
        "custom_fields": {"crm_id": "A-1042", "sales_rep": "jane"},
        "created_at": CREATED,
        "updated_at": EARLIER,
    })
}

fn account() -> Value {
    json!({
        "id": ACCOUNT_ID,
        "clients_id": CLIENT_ID,
        "name": "Acme SIP trunk 1",
        "auth_type": "ip",
        "ips": ["198.51.100.10", "198.51.100.11"],
        "login": "acme-trunk1",
        "password": "Xk7#pQ2v9Lm",
        "enabled": true,
        "created_at": CREATED,
        "updated_at": EARLIER,
    })
}

fn subscription() -> Value {
    json!({
        "id": SUBSCRIPTION_ID,
        "clients_id": CLIENT_ID,
        "packages_id": PACKAGE_ID,
        "status": "active",
        "start_dt": "2026-11-01T00:00:00.000000Z",
        "period_start": "2026-11-01T00:00:00.000000Z",
        "period_end": "2026-12-01T00:00:00.000000Z",
        "created_at": CREATED,
        "updated_at": EARLIER,
    })
}

fn did_active() -> Value {
    json!({
        "id": DID_ID,
        "number": "+14155550123",
        "status": "active",
        "clients_id": CLIENT_ID,
        "accounts_id": ACCOUNT_ID,
        "hold_until": null,
        "status_after_hold": null,
        "created_at": CREATED,
        "updated_at": EARLIER,
    })
}

fn did_unassigned(status: &str) -> Value {
    json!({
        "id": DID_ID,
        "number": "+14155550123",
        "status": status,
        "clients_id": null,
        "accounts_id": null,
        "hold_until": null,
        "status_after_hold": null,
        "created_at": CREATED,
        "updated_at": EARLIER,
    })
}

fn transaction(id: i64, notes: &str) -> Value {
    json!({
        "id": id,
        "clients_id": CLIENT_ID,
        "amount": "25",
        "dt": "2026-11-22T10:15:00.000000Z",
        "notes": notes,
        "created_at": EARLIER,
        "updated_at": EARLIER,
    })
}

/// A 94-byte rate deck, `prefix,rate,effective_from` with three rows.
const SAMPLE_CSV_BASE64: &str = concat!(
    "cHJlZml4LHJhdGUsZWZmZWN0aXZlX2Zyb20KMTQxNSwwLjAwNzUsMjAyNi0xMi0wMQox",
    "MjEyLDAuMDA2OCwyMDI2LTEyLTAxCjQ0LDAuMDExMiwyMDI2LTEyLTAxCg==",
);
const SAMPLE_CSV_SIZE: u64 = 94;

fn email_message() -> Value {
    json!({
        "message_id": "<20261122101512.4f7a9c@mail.carrier-a.example>",
        "sender": "rates@carrier-a.example",
        "subject": "Rate update A-Z 2026-12-01",
        "received_at": "2026-11-22T10:15:12.000000Z",
        "rate_tables_id": RATE_TABLE_ID,
        "rate_table": RATE_TABLE_NAME,
        "file_name": "rates_2026-11-22.csv",
        "reason": null,
    })
}

fn import_job(success: bool) -> Value {
    let (status, rows_imported, errors) = if success {
        ("success", 3, json!([]))
    } else {
        (
            "failed",
            0,
            json!([
                {"line": 3, "message": "rate: \"0,0068\" is not a decimal number"},
                {"line": 4, "message": "prefix: must contain digits only"},
            ]),
        )
    };
    json!({
        "id": IMPORT_ID,
        "kind": "rates",
        "status": status,
        "file_name": "rates_2026-11-22.csv",
        "rows_total": 3,
        "rows_imported": rows_imported,
        "errors": errors,
        "rate_tables_id": RATE_TABLE_ID,
        "source": "email",
        "created_at": "2026-11-22T10:15:12.500000Z",
        "updated_at": NOW,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const SPEC_IDS: &str = "clients.create clients.update clients.archive clients.delete \
        clients.balance_zero clients.balance_notzero clients.custom_fields.update \
        clients.accounts.create clients.accounts.update clients.accounts.delete \
        clients.subscriptions.assign clients.subscriptions.activate \
        clients.subscriptions.deactivate clients.subscriptions.renew \
        clients.subscriptions.close dids.create dids.update dids.activate dids.stock \
        dids.block dids.reserve dids.hold dids.archive email_rates_manager.import \
        email_rates_manager.rate_tables_no_match email_rates_manager.no_attachments \
        email_rates_manager.file_processing_error importd.process_success \
        importd.process_failed accounting.charges.create accounting.charges.update \
        accounting.charges.delete accounting.payments.create accounting.payments.update \
        accounting.payments.delete";

    #[test]
    fn exactly_the_35_spec_ids_in_order() {
        let ids: Vec<&str> = EVENT_TYPES.iter().map(|e| e.id).collect();
        let spec: Vec<&str> = SPEC_IDS.split_whitespace().collect();
        assert_eq!(ids.len(), 35);
        assert_eq!(ids, spec);
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), 35);
    }

    #[test]
    fn groups_and_stages() {
        let groups: HashSet<&str> = EVENT_TYPES.iter().map(|e| e.group).collect();
        let expected: HashSet<&str> = [
            "clients",
            "accounts",
            "subscriptions",
            "dids",
            "email_rates_manager",
            "importd",
            "charges",
            "payments",
        ]
        .into_iter()
        .collect();
        assert_eq!(groups, expected);
        for e in EVENT_TYPES {
            let derived = e.id.starts_with("clients.balance_")
                || e.id.starts_with("email_rates_manager.")
                || e.id.starts_with("importd.");
            assert_eq!(e.before_capable, !derived, "{}", e.id);
            if derived {
                assert_eq!(e.stages(), &[Stage::After]);
            } else {
                assert_eq!(e.stages(), &[Stage::Before, Stage::After]);
            }
            assert!(!e.description.is_empty());
        }
        assert_eq!(find("clients.accounts.update").unwrap().group, "accounts");
        assert_eq!(
            find("accounting.payments.delete").unwrap().group,
            "payments"
        );
        assert!(find("clients").is_none());
    }

    #[test]
    fn stage_serde() {
        assert_eq!(
            serde_json::to_value(Stage::Before).unwrap(),
            json!("before")
        );
        assert_eq!(
            serde_json::from_value::<Stage>(json!("after")).unwrap(),
            Stage::After
        );
        assert_eq!(Stage::Before.as_str(), "before");
        assert_eq!(Stage::After.to_string(), "after");
    }

    fn is_time(v: &Value) -> bool {
        let Some(s) = v.as_str() else { return false };
        let b = s.as_bytes();
        b.len() == 27
            && b[4] == b'-'
            && b[10] == b'T'
            && b[19] == b'.'
            && b[26] == b'Z'
            && s.chars().filter(|c| c.is_ascii_digit()).count() == 20
    }

    fn is_uuid_v7(s: &str) -> bool {
        let parts: Vec<&str> = s.split('-').collect();
        parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
            && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
            && parts[2].starts_with('7')
            && matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b')
    }

    #[test]
    fn samples_have_the_payload_shape() {
        let mut uids = HashSet::new();
        for e in EVENT_TYPES {
            let s = e.sample();
            let obj = s.as_object().unwrap();
            assert_eq!(obj.len(), 3, "{}", e.id);
            for key in ["event", "data", "previous"] {
                assert!(obj.contains_key(key), "{} lacks {key}", e.id);
            }
            let ev = &s["event"];
            assert_eq!(ev["events_id"], json!(e.id));
            assert_eq!(ev["dt"], json!(SAMPLE_EVENT_DT));
            assert_eq!(ev["stage"], json!("after"));
            assert!(is_uuid_v7(ev["uid"].as_str().unwrap()), "{}", e.id);
            assert!(uids.insert(ev["uid"].as_str().unwrap().to_owned()));
            assert!(ev["object_id"].is_i64() || ev["object_id"].is_null());
            assert!(s["data"].is_object() && !s["data"].as_object().unwrap().is_empty());
            assert!(s["previous"].is_object());
            // The object id is the object's id, except for email events.
            if !e.id.starts_with("email_rates_manager.") {
                assert_eq!(ev["object_id"], s["data"]["id"], "{}", e.id);
                assert!(is_time(&s["data"]["created_at"]), "{}", e.id);
                assert!(is_time(&s["data"]["updated_at"]), "{}", e.id);
            } else {
                assert_eq!(ev["object_id"], s["data"]["rate_tables_id"], "{}", e.id);
                assert!(is_time(&s["data"]["received_at"]));
            }
            // Every previous key is a field of the object, with a different value.
            for (k, v) in s["previous"].as_object().unwrap() {
                assert!(s["data"].get(k).is_some(), "{}: {k}", e.id);
                assert_ne!(&s["data"][k], v, "{}: {k}", e.id);
            }
        }
    }

    #[test]
    fn previous_is_filled_for_update_like_events_only() {
        for id in [
            "clients.update",
            "clients.custom_fields.update",
            "clients.balance_zero",
            "clients.balance_notzero",
            "clients.accounts.update",
            "clients.subscriptions.activate",
            "dids.update",
            "dids.hold",
            "accounting.charges.update",
        ] {
            let s = find(id).unwrap().sample();
            assert!(!s["previous"].as_object().unwrap().is_empty(), "{id}");
        }
        for id in [
            "clients.create",
            "clients.delete",
            "dids.create",
            "importd.process_success",
            "email_rates_manager.import",
            "accounting.payments.delete",
        ] {
            let s = find(id).unwrap().sample();
            assert_eq!(s["previous"], json!({}), "{id}");
        }
    }

    #[test]
    fn sample_details() {
        let zero = find("clients.balance_zero").unwrap().sample();
        assert_eq!(zero["data"]["balance"], json!("-14.5"));
        assert_eq!(zero["previous"]["balance"], json!("10.5"));
        let no_match = find("email_rates_manager.rate_tables_no_match")
            .unwrap()
            .sample();
        assert!(no_match["event"]["object_id"].is_null());
        assert!(no_match["data"]["rate_table"].is_null());
        let import = find("email_rates_manager.import").unwrap().sample();
        let b64 = import["data"]["content_base64"].as_str().unwrap();
        // 94 bytes → 128 base64 characters (with padding).
        assert_eq!(b64.len(), 128);
        assert_eq!(import["data"]["size"], json!(SAMPLE_CSV_SIZE));
        let failed = find("importd.process_failed").unwrap().sample();
        assert_eq!(failed["data"]["status"], json!("failed"));
        assert_eq!(failed["data"]["rows_imported"], json!(0));
        assert!(!failed["data"]["errors"].as_array().unwrap().is_empty());
        let stock = find("dids.stock").unwrap().sample();
        assert!(stock["data"]["clients_id"].is_null());
        assert_eq!(stock["previous"]["clients_id"], json!(CLIENT_ID));
    }

    #[test]
    fn pattern_validity() {
        for p in [
            "*",
            "clients.*",
            "clients.accounts.*",
            "clients.subscriptions.*",
            "clients.custom_fields.*",
            "dids.*",
            "accounting.*",
            "accounting.charges.*",
            "email_rates_manager.*",
            "importd.*",
            "clients.create",
            "dids.hold",
        ] {
            assert!(is_valid_pattern(p), "{p}");
        }
        for p in [
            "",
            ".*",
            "accounts.*",
            "clients",
            "clients.",
            "clients*",
            "clients.**",
            "*.*",
            "*.create",
            "clients.create.*",
            "clients.balance_zero.*",
            "Clients.create",
            "clients.create ",
            "dids.explode",
        ] {
            assert!(!is_valid_pattern(p), "{p:?}");
        }
    }

    #[test]
    fn pattern_matching() {
        assert!(pattern_matches("*", "dids.hold"));
        assert!(pattern_matches("clients.*", "clients.create"));
        assert!(pattern_matches("clients.*", "clients.accounts.delete"));
        assert!(pattern_matches(
            "clients.accounts.*",
            "clients.accounts.delete"
        ));
        assert!(!pattern_matches("clients.accounts.*", "clients.create"));
        assert!(!pattern_matches("clients.*", "clientsx.create"));
        assert!(!pattern_matches("clients.*", "clients"));
        assert!(!pattern_matches("dids.*", "clients.create"));
        assert!(pattern_matches("dids.hold", "dids.hold"));
        assert!(!pattern_matches("dids.hold", "dids.hold_x"));
        assert!(!pattern_matches("dids", "dids.hold"));
    }

    #[test]
    fn before_capability_of_patterns() {
        assert!(pattern_allows_before("*"));
        assert!(pattern_allows_before("clients.*"));
        assert!(pattern_allows_before("clients.update"));
        assert!(pattern_allows_before("dids.*"));
        assert!(pattern_allows_before("accounting.*"));
        assert!(!pattern_allows_before("clients.balance_zero"));
        assert!(!pattern_allows_before("clients.balance_notzero"));
        assert!(!pattern_allows_before("importd.*"));
        assert!(!pattern_allows_before("importd.process_failed"));
        assert!(!pattern_allows_before("email_rates_manager.*"));
        assert!(!pattern_allows_before("email_rates_manager.import"));
        assert!(!pattern_allows_before("nothing.*"));
    }
}
