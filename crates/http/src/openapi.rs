//! `GET /openapi.json` and `GET /docs`: the API described for machines and people.
//!
//! Schemas come from the types the routes really (de)serialise (`ToSchema` derives), so
//! they cannot drift from the wire format. The operations are listed once in
//! [`OPERATIONS`]; a test requests every one of them against the running server, so a
//! listed route that does not exist fails the build's tests.

use axum::Router;
use billhook_app::App;
use serde_json::{json, Map, Value};
use utoipa::{OpenApi, ToSchema};

use billhook_app::actions::{accounts, clients, dids, packages, subscriptions, transactions};
use billhook_app::{email_rates, handlers, rate_tables};
use billhook_domain::entities as e;

/// Every schema of the document, by name.
#[derive(OpenApi)]
#[openapi(components(schemas(
    e::Client,
    e::ClientStatus,
    e::Account,
    e::AuthType,
    e::Package,
    e::PackageStatus,
    e::Subscription,
    e::SubscriptionStatus,
    e::Did,
    e::DidStatus,
    e::Transaction,
    e::Handler,
    e::HandlerStatus,
    e::HandlerType,
    e::OnFailure,
    billhook_domain::catalogue::Stage,
    e::RateTable,
    e::Rate,
    e::Import,
    e::ImportError,
    e::ImportKind,
    e::ImportStatus,
    clients::ClientInput,
    clients::ClientPatch,
    accounts::AccountInput,
    packages::PackageInput,
    subscriptions::AssignInput,
    dids::DidInput,
    transactions::TransactionInput,
    transactions::TransactionPatch,
    handlers::HandlerInput,
    rate_tables::RateTableInput,
    handlers::WithSecret,
    crate::routes::handlers::Secrets,
    crate::routes::handlers::PreviousSecret,
    crate::routes::handlers::Rotated,
    crate::routes::handlers::TestInput,
    crate::routes::handlers::RecoverInput,
    crate::routes::handlers::Requeued,
    crate::routes::events::EventType,
    crate::routes::imports::Queued,
    handlers::Execution,
    handlers::Delivery,
    Payload,
    PayloadEvent,
    EventWithDeliveries,
    email_rates::Report,
    email_rates::Outcome,
    billhook_domain::Money,
    billhook_domain::Timestamp,
    billhook_domain::IsoDuration,
    Error,
)))]
struct Schemas;

/// The error body every failure has.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Error {
    /// `{"message": "human text", "data": {"code": "…", …}}`
    error: Map<String, Value>,
}

/// What a handler receives, and what the event log lists (built as JSON text by
/// `billhook_domain::payload`; the API tests compare these fields with real answers).
#[derive(ToSchema)]
#[allow(dead_code)]
struct Payload {
    event: PayloadEvent,
    /// The whole object after the action (before a delete: its last state; in the before
    /// stage, the object as it would be).
    data: Map<String, Value>,
    /// The old values of the fields that changed.
    previous: Map<String, Value>,
}

/// A payload's `event`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PayloadEvent {
    /// When the action began, before its before handlers ran.
    dt: billhook_domain::Timestamp,
    events_id: String,
    /// Null in the before stage of a create, and for an event about no object (an
    /// email to the rates manager that matched no rate table).
    object_id: Option<i64>,
    /// The event's id, the same across retries (the `webhook-id` header).
    uid: String,
    stage: billhook_domain::catalogue::Stage,
}

/// `GET /api/v1/events/{uid}`: the payload with each after handler's delivery of it.
#[derive(ToSchema)]
#[allow(dead_code)]
struct EventWithDeliveries {
    event: PayloadEvent,
    data: Map<String, Value>,
    previous: Map<String, Value>,
    deliveries: Vec<handlers::Delivery>,
}

/// One operation: method, path, tag, summary, request schema, answer status and schema
/// (`[X]` for a `{items, total}` page of X), query parameters.
pub type Operation = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    u16,
    Option<&'static str>,
    &'static [&'static str],
);

const PAGE: &[&str] = &["limit", "offset"];

/// Every route of `/api/v1` and the unauthenticated ones.
pub const OPERATIONS: &[Operation] = &[
    (
        "post",
        "/api/v1/clients",
        "clients",
        "Create a client (clients.create)",
        Some("ClientInput"),
        201,
        Some("Client"),
        &[],
    ),
    (
        "get",
        "/api/v1/clients",
        "clients",
        "List clients",
        None,
        200,
        Some("[Client]"),
        &["status", "q", "limit", "offset"],
    ),
    (
        "get",
        "/api/v1/clients/{id}",
        "clients",
        "Get a client",
        None,
        200,
        Some("Client"),
        &[],
    ),
    (
        "patch",
        "/api/v1/clients/{id}",
        "clients",
        "Change a client (clients.update)",
        Some("ClientPatch"),
        200,
        Some("Client"),
        &[],
    ),
    (
        "delete",
        "/api/v1/clients/{id}",
        "clients",
        "Delete a client (clients.delete)",
        None,
        200,
        Some("Client"),
        &[],
    ),
    (
        "put",
        "/api/v1/clients/{id}/custom_fields",
        "clients",
        "Replace custom fields (clients.custom_fields.update)",
        None,
        200,
        Some("Client"),
        &[],
    ),
    (
        "post",
        "/api/v1/clients/{id}/archive",
        "clients",
        "Archive a client (clients.archive)",
        None,
        200,
        Some("Client"),
        &[],
    ),
    (
        "post",
        "/api/v1/accounts",
        "accounts",
        "Create a VoIP account (clients.accounts.create)",
        Some("AccountInput"),
        201,
        Some("Account"),
        &[],
    ),
    (
        "get",
        "/api/v1/accounts",
        "accounts",
        "List accounts",
        None,
        200,
        Some("[Account]"),
        &["clients_id", "limit", "offset"],
    ),
    (
        "get",
        "/api/v1/accounts/{id}",
        "accounts",
        "Get an account",
        None,
        200,
        Some("Account"),
        &[],
    ),
    (
        "patch",
        "/api/v1/accounts/{id}",
        "accounts",
        "Change an account (clients.accounts.update)",
        Some("AccountInput"),
        200,
        Some("Account"),
        &[],
    ),
    (
        "delete",
        "/api/v1/accounts/{id}",
        "accounts",
        "Delete an account (clients.accounts.delete)",
        None,
        200,
        Some("Account"),
        &[],
    ),
    (
        "post",
        "/api/v1/packages",
        "packages",
        "Create a package",
        Some("PackageInput"),
        201,
        Some("Package"),
        &[],
    ),
    (
        "get",
        "/api/v1/packages",
        "packages",
        "List packages",
        None,
        200,
        Some("[Package]"),
        &["status", "limit", "offset"],
    ),
    (
        "get",
        "/api/v1/packages/{id}",
        "packages",
        "Get a package",
        None,
        200,
        Some("Package"),
        &[],
    ),
    (
        "patch",
        "/api/v1/packages/{id}",
        "packages",
        "Change a package",
        Some("PackageInput"),
        200,
        Some("Package"),
        &[],
    ),
    (
        "delete",
        "/api/v1/packages/{id}",
        "packages",
        "Delete a package",
        None,
        200,
        Some("Package"),
        &[],
    ),
    (
        "post",
        "/api/v1/subscriptions",
        "subscriptions",
        "Assign a package (clients.subscriptions.assign)",
        Some("AssignInput"),
        201,
        Some("Subscription"),
        &[],
    ),
    (
        "get",
        "/api/v1/subscriptions",
        "subscriptions",
        "List subscriptions",
        None,
        200,
        Some("[Subscription]"),
        &["clients_id", "status", "limit", "offset"],
    ),
    (
        "get",
        "/api/v1/subscriptions/{id}",
        "subscriptions",
        "Get a subscription",
        None,
        200,
        Some("Subscription"),
        &[],
    ),
    (
        "post",
        "/api/v1/subscriptions/{id}/activate",
        "subscriptions",
        "Activate (clients.subscriptions.activate)",
        None,
        200,
        Some("Subscription"),
        &[],
    ),
    (
        "post",
        "/api/v1/subscriptions/{id}/deactivate",
        "subscriptions",
        "Deactivate (clients.subscriptions.deactivate)",
        None,
        200,
        Some("Subscription"),
        &[],
    ),
    (
        "post",
        "/api/v1/subscriptions/{id}/renew",
        "subscriptions",
        "Renew (clients.subscriptions.renew)",
        None,
        200,
        Some("Subscription"),
        &[],
    ),
    (
        "post",
        "/api/v1/subscriptions/{id}/close",
        "subscriptions",
        "Close (clients.subscriptions.close)",
        None,
        200,
        Some("Subscription"),
        &[],
    ),
    (
        "post",
        "/api/v1/dids",
        "dids",
        "Create a DID (dids.create)",
        Some("DidInput"),
        201,
        Some("Did"),
        &[],
    ),
    (
        "get",
        "/api/v1/dids",
        "dids",
        "List DIDs",
        None,
        200,
        Some("[Did]"),
        &["status", "clients_id", "q", "limit", "offset"],
    ),
    (
        "get",
        "/api/v1/dids/{id}",
        "dids",
        "Get a DID",
        None,
        200,
        Some("Did"),
        &[],
    ),
    (
        "patch",
        "/api/v1/dids/{id}",
        "dids",
        "Change a DID (dids.update)",
        Some("DidInput"),
        200,
        Some("Did"),
        &[],
    ),
    (
        "post",
        "/api/v1/dids/{id}/activate",
        "dids",
        "Activate (dids.activate)",
        Some("DidInput"),
        200,
        Some("Did"),
        &[],
    ),
    (
        "post",
        "/api/v1/dids/{id}/stock",
        "dids",
        "Back to stock (dids.stock)",
        Some("DidInput"),
        200,
        Some("Did"),
        &[],
    ),
    (
        "post",
        "/api/v1/dids/{id}/block",
        "dids",
        "Block (dids.block)",
        Some("DidInput"),
        200,
        Some("Did"),
        &[],
    ),
    (
        "post",
        "/api/v1/dids/{id}/reserve",
        "dids",
        "Reserve (dids.reserve)",
        Some("DidInput"),
        200,
        Some("Did"),
        &[],
    ),
    (
        "post",
        "/api/v1/dids/{id}/hold",
        "dids",
        "Hold (dids.hold)",
        Some("DidInput"),
        200,
        Some("Did"),
        &[],
    ),
    (
        "post",
        "/api/v1/dids/{id}/archive",
        "dids",
        "Archive (dids.archive)",
        Some("DidInput"),
        200,
        Some("Did"),
        &[],
    ),
    (
        "post",
        "/api/v1/charges",
        "accounting",
        "Create a charge (accounting.charges.create)",
        Some("TransactionInput"),
        201,
        Some("Transaction"),
        &[],
    ),
    (
        "get",
        "/api/v1/charges",
        "accounting",
        "List charges",
        None,
        200,
        Some("[Transaction]"),
        &["clients_id", "limit", "offset"],
    ),
    (
        "get",
        "/api/v1/charges/{id}",
        "accounting",
        "Get a charge",
        None,
        200,
        Some("Transaction"),
        &[],
    ),
    (
        "patch",
        "/api/v1/charges/{id}",
        "accounting",
        "Change a charge (accounting.charges.update)",
        Some("TransactionPatch"),
        200,
        Some("Transaction"),
        &[],
    ),
    (
        "delete",
        "/api/v1/charges/{id}",
        "accounting",
        "Delete a charge (accounting.charges.delete)",
        None,
        200,
        Some("Transaction"),
        &[],
    ),
    (
        "post",
        "/api/v1/payments",
        "accounting",
        "Create a payment (accounting.payments.create)",
        Some("TransactionInput"),
        201,
        Some("Transaction"),
        &[],
    ),
    (
        "get",
        "/api/v1/payments",
        "accounting",
        "List payments",
        None,
        200,
        Some("[Transaction]"),
        &["clients_id", "limit", "offset"],
    ),
    (
        "get",
        "/api/v1/payments/{id}",
        "accounting",
        "Get a payment",
        None,
        200,
        Some("Transaction"),
        &[],
    ),
    (
        "patch",
        "/api/v1/payments/{id}",
        "accounting",
        "Change a payment (accounting.payments.update)",
        Some("TransactionPatch"),
        200,
        Some("Transaction"),
        &[],
    ),
    (
        "delete",
        "/api/v1/payments/{id}",
        "accounting",
        "Delete a payment (accounting.payments.delete)",
        None,
        200,
        Some("Transaction"),
        &[],
    ),
    (
        "post",
        "/api/v1/rate_tables",
        "rates",
        "Create a rate table",
        Some("RateTableInput"),
        201,
        Some("RateTable"),
        &[],
    ),
    (
        "get",
        "/api/v1/rate_tables",
        "rates",
        "List rate tables",
        None,
        200,
        Some("[RateTable]"),
        &["name", "limit", "offset"],
    ),
    (
        "get",
        "/api/v1/rate_tables/{id}",
        "rates",
        "Get a rate table",
        None,
        200,
        Some("RateTable"),
        &[],
    ),
    (
        "patch",
        "/api/v1/rate_tables/{id}",
        "rates",
        "Change a rate table",
        Some("RateTableInput"),
        200,
        Some("RateTable"),
        &[],
    ),
    (
        "delete",
        "/api/v1/rate_tables/{id}",
        "rates",
        "Delete a rate table and its rates",
        None,
        200,
        Some("RateTable"),
        &[],
    ),
    (
        "get",
        "/api/v1/rate_tables/{id}/rates",
        "rates",
        "List a table's rates",
        None,
        200,
        Some("[Rate]"),
        &["prefix", "number", "effective_at", "limit", "offset"],
    ),
    (
        "post",
        "/api/v1/imports",
        "imports",
        "Upload a CSV import (multipart: kind, rate_tables_id, file); 202",
        None,
        202,
        Some("Queued"),
        &[],
    ),
    (
        "get",
        "/api/v1/imports",
        "imports",
        "List imports",
        None,
        200,
        Some("[Import]"),
        &["kind", "status", "rate_tables_id", "limit", "offset"],
    ),
    (
        "get",
        "/api/v1/imports/{id}",
        "imports",
        "Get an import",
        None,
        200,
        Some("Import"),
        &[],
    ),
    (
        "post",
        "/api/v1/email_rates/messages",
        "imports",
        "Hand a raw RFC 822 message to the email rates manager",
        None,
        200,
        Some("Report"),
        &[],
    ),
    (
        "get",
        "/api/v1/event_types",
        "events",
        "The event catalogue with samples",
        None,
        200,
        Some("[EventType]"),
        &[],
    ),
    (
        "get",
        "/api/v1/events",
        "events",
        "List events (payloads), newest first",
        None,
        200,
        Some("[Payload]"),
        &["events_id", "object_id", "from", "to", "limit", "offset"],
    ),
    (
        "get",
        "/api/v1/events/{uid}",
        "events",
        "An event with its per-handler delivery state",
        None,
        200,
        Some("EventWithDeliveries"),
        &[],
    ),
    (
        "post",
        "/api/v1/handlers",
        "handlers",
        "Register a handler",
        Some("HandlerInput"),
        201,
        Some("WithSecret"),
        &[],
    ),
    (
        "get",
        "/api/v1/handlers",
        "handlers",
        "List handlers (archived hidden unless asked)",
        None,
        200,
        Some("[Handler]"),
        &[
            "status", "event", "matches", "type", "stage", "limit", "offset",
        ],
    ),
    (
        "get",
        "/api/v1/handlers/{id}",
        "handlers",
        "Get a handler",
        None,
        200,
        Some("Handler"),
        &[],
    ),
    (
        "patch",
        "/api/v1/handlers/{id}",
        "handlers",
        "Change a handler",
        Some("HandlerInput"),
        200,
        Some("Handler"),
        &[],
    ),
    (
        "delete",
        "/api/v1/handlers/{id}",
        "handlers",
        "Delete a handler",
        None,
        200,
        Some("Handler"),
        &[],
    ),
    (
        "post",
        "/api/v1/handlers/{id}/enable",
        "handlers",
        "Enable",
        None,
        200,
        Some("Handler"),
        &[],
    ),
    (
        "post",
        "/api/v1/handlers/{id}/disable",
        "handlers",
        "Disable",
        None,
        200,
        Some("Handler"),
        &[],
    ),
    (
        "post",
        "/api/v1/handlers/{id}/archive",
        "handlers",
        "Archive",
        None,
        200,
        Some("Handler"),
        &[],
    ),
    (
        "get",
        "/api/v1/handlers/{id}/secret",
        "handlers",
        "The signing secret, and in previous_secrets those replaced that still sign",
        None,
        200,
        Some("Secrets"),
        &[],
    ),
    (
        "post",
        "/api/v1/handlers/{id}/secret/rotate",
        "handlers",
        "Rotate the signing secret (the one replaced signs on for 24 h)",
        None,
        200,
        Some("Rotated"),
        &[],
    ),
    (
        "post",
        "/api/v1/handlers/{id}/test",
        "handlers",
        "Call the handler now with its event's sample",
        Some("TestInput"),
        200,
        Some("Execution"),
        &[],
    ),
    (
        "post",
        "/api/v1/handlers/{id}/recover",
        "handlers",
        "Queue again the events of a period ({since, until?})",
        Some("RecoverInput"),
        200,
        Some("Requeued"),
        &[],
    ),
    (
        "get",
        "/api/v1/executions",
        "monitoring",
        "The execution log",
        None,
        200,
        Some("[Execution]"),
        &[
            "handlers_id",
            "status",
            "events_id",
            "stage",
            "object_id",
            "event_uid",
            "from",
            "to",
            "q",
            "limit",
            "offset",
        ],
    ),
    (
        "get",
        "/api/v1/deliveries",
        "monitoring",
        "Deliveries by state",
        None,
        200,
        Some("[Delivery]"),
        &["status", "handlers_id", "limit", "offset"],
    ),
    (
        "post",
        "/api/v1/deliveries/{id}/retry",
        "monitoring",
        "Retry a failed delivery now",
        None,
        200,
        Some("Delivery"),
        &[],
    ),
    (
        "get",
        "/healthz",
        "service",
        "200 while the database answers (no key needed)",
        None,
        200,
        None,
        &[],
    ),
    (
        "get",
        "/metrics",
        "service",
        "Prometheus metrics (no key needed)",
        None,
        200,
        None,
        &[],
    ),
];

/// The OpenAPI 3.1 document of this server.
pub fn document() -> Value {
    let components = serde_json::to_value(Schemas::openapi().components).expect("serialisable");
    let mut paths = Map::new();
    for &(method, path, tag, summary, body, status, answer, query) in OPERATIONS {
        let mut parameters: Vec<Value> = Vec::new();
        if let Some(name) = path_param(path) {
            parameters.push(json!({"name": name, "in": "path", "required": true,
                                   "schema": {"type": if name == "uid" { "string" } else { "integer" }}}));
        }
        for q in query {
            // Every `…_id` is a row id but `events_id`, which names an event type.
            let integer = PAGE.contains(q) || (q.ends_with("_id") && *q != "events_id");
            parameters.push(json!({"name": q, "in": "query", "required": false,
                                   "schema": {"type": if integer { "integer" } else { "string" }}}));
        }
        let content = answer.map(|a| match a.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
            Some(item) => json!({"type": "object", "required": ["items", "total"], "properties": {
                "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
                "total": {"type": "integer"}}}),
            None => json!({"$ref": format!("#/components/schemas/{a}")}),
        });
        let mut responses = Map::new();
        responses.insert(
            status.to_string(),
            match content {
                Some(schema) => json!({"description": "OK", "content": {"application/json": {"schema": schema}}}),
                None => json!({"description": "OK"}),
            },
        );
        if path.starts_with("/api/") {
            let error = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
            for (code, what) in [
                ("400", "bad_request"),
                ("401", "unauthorized"),
                ("404", "not_found"),
                ("409", "conflict or invalid_transition"),
                (
                    "422",
                    "validation_failed, forbidden_by_handler or handler_failed",
                ),
            ] {
                let mut e = error.clone();
                e["description"] = json!(what);
                responses.insert(code.into(), e);
            }
            if method != "get" {
                let mut e = error.clone();
                e["description"] = json!("payload_too_large (a body over its route's limit)");
                responses.insert("413".into(), e);
            }
        }
        let mut op = json!({"tags": [tag], "summary": summary, "parameters": parameters,
                            "responses": responses});
        if let Some(b) = body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{b}")}}}});
        }
        if path.starts_with("/api/") {
            op["security"] = json!([{"api_key": []}, {"bearer": []}]);
        }
        let item = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        item[method] = op;
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "billhook", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Telecom billing core with a Provisioning API. Money is a decimal string, times are RFC 3339 UTC."},
        "paths": paths,
        "components": components,
    });
    doc["components"]["securitySchemes"] = json!({
        "api_key": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
        "bearer": {"type": "http", "scheme": "bearer"},
    });
    doc
}

fn path_param(path: &str) -> Option<&str> {
    let start = path.find('{')?;
    let end = path[start..].find('}')? + start;
    Some(&path[start + 1..end])
}

/// `/openapi.json` and the Swagger UI at `/docs` (its files are vendored in the binary);
/// neither needs a key.
pub fn routes() -> Router<App> {
    utoipa_swagger_ui::SwaggerUi::new("/docs")
        .external_url_unchecked("/openapi.json", document())
        .into()
}
