//! OpenAPI schemas of the value types that travel as strings: the API documents them
//! as what a client sends and reads, not as their Rust representation.

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::{IsoDuration, Money, Timestamp};

fn text(description: &str, example: &str, format: Option<SchemaFormat>) -> RefOr<Schema> {
    let mut b = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .examples([serde_json::json!(example)]);
    if let Some(f) = format {
        b = b.format(Some(f));
    }
    RefOr::T(Schema::Object(b.build()))
}

impl PartialSchema for Money {
    fn schema() -> RefOr<Schema> {
        text(
            "An exact decimal amount, up to 6 fractional digits; a number is accepted on input",
            "12.5",
            None,
        )
    }
}
impl ToSchema for Money {}

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        text(
            "RFC 3339 in UTC with microseconds",
            "2026-11-22T10:15:30.123456Z",
            Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)),
        )
    }
}
impl ToSchema for Timestamp {}

impl PartialSchema for IsoDuration {
    fn schema() -> RefOr<Schema> {
        text(
            "An ISO 8601 duration",
            "P1M",
            Some(SchemaFormat::Custom("duration".into())),
        )
    }
}
impl ToSchema for IsoDuration {}
