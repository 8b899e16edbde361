//! CSV files under tests/data, read as the application will read them.

use std::fs::File;

use billhook_domain::{Money, Timestamp};
use billhook_intake::{rates, rows, RateRow, RowError, CLIENT_COLUMNS, DID_COLUMNS};

fn data(name: &str) -> File {
    File::open(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn all_rates(name: &str) -> Vec<Result<RateRow, RowError>> {
    rates(data(name)).unwrap().collect()
}

fn row(prefix: &str, rate: &str, effective_from: Option<&str>) -> RateRow {
    RateRow {
        prefix: prefix.into(),
        rate: Money::parse(rate).unwrap(),
        effective_from: effective_from.map(|t| Timestamp::parse(t).unwrap()),
    }
}

#[test]
fn comma_with_quotes_and_blank_lines() {
    let rows: Vec<_> = all_rates("rates_comma.csv")
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [
            row("44", "0.0068", Some("2025-01-01")),
            row("4420", "0.012", Some("2025-01-01T08:00:00Z")),
            row("33", "0.1", None),
            row("1", "0", Some("2025-02-28T23:00:00Z")),
        ]
    );
}

#[test]
fn semicolon_bom_crlf_and_aliases() {
    let rows: Vec<_> = all_rates("rates_semicolon_bom.csv")
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [
            row("49", "0.0123", Some("2025-02-01")),
            row("4930", "0.02", Some("2025-02-01")),
            row("491", "0.15", None),
        ]
    );
}

#[test]
fn tab_and_pipe() {
    let rows: Vec<_> = all_rates("rates_tab.csv")
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, [row("44", "0.5", None), row("33", "0.25", None)]);
    let rows: Vec<_> = all_rates("rates_pipe.csv")
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, [row("7", "0.03", Some("2025-05-05"))]);
}

#[test]
fn bad_rows_are_errors_with_their_line() {
    let results = all_rates("rates_bad_rows.csv");
    let errors: Vec<(u64, String)> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| (e.line, e.message.clone()))
        .collect();
    assert_eq!(
        errors,
        [
            (3, r#"rate: "0,0068" is not a decimal number"#.to_owned()),
            (4, "prefix: must contain digits only".to_owned()),
            (5, "has 3 fields, the header has 2".to_owned()),
            (
                7,
                r#"rate: "0.1234567" has more than 6 decimal places"#.to_owned()
            ),
            (9, r#"rate: "-1" must not be negative"#.to_owned()),
        ]
    );
    let good: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
    assert_eq!(good, [row("44", "0.0068", None), row("39", "0.05", None)]);
}

#[test]
fn invalid_utf8_is_a_row_error() {
    let results = all_rates("rates_invalid_utf8.csv");
    assert_eq!(results.len(), 3);
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.line, 3);
    assert!(
        error.message.starts_with("rate: is not valid UTF-8"),
        "{error}"
    );
    assert_eq!(error.to_string(), format!("line 3: {}", error.message));
    assert!(results[2].is_ok());
}

#[test]
fn row_error_serialises_as_line_and_message() {
    let error = RowError {
        line: 3,
        message: "prefix: must contain digits only".into(),
    };
    let json = serde_json_like(&error);
    assert_eq!(
        json,
        r#"{"line":3,"message":"prefix: must contain digits only"}"#
    );
}

/// The JSON the HTTP layer will send for a row error.
fn serde_json_like(error: &RowError) -> String {
    serde_json::to_string(error).unwrap()
}

#[test]
fn header_errors() {
    let e = rates(data("rates_unknown_column.csv")).unwrap_err();
    assert!(
        e.message.starts_with(
            r#"unknown column "country"; accepted columns: prefix, rate, effective_from"#
        ),
        "{e}"
    );
    let e = rates(data("rates_missing_rate.csv")).unwrap_err();
    assert!(
        e.message.starts_with(r#"missing required column "rate""#),
        "{e}"
    );
    let e = rates(data("not_csv.bin")).unwrap_err();
    assert!(e.message.contains("not text"), "{e}");
    let e = rates(&b""[..]).unwrap_err();
    assert_eq!(e.message, "the file is empty");
}

#[test]
fn clients_keep_raw_values_and_quoted_newlines() {
    let rows: Vec<_> = rows(data("clients.csv"), &CLIENT_COLUMNS)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].line, 2);
    assert_eq!(rows[0].get("name"), Some(r#"Acme, "Big" Ltd"#));
    assert_eq!(rows[0].get("tags"), Some("gold|vip"));
    assert_eq!(rows[0].get("credit"), Some("100.50"));
    assert_eq!(rows[1].line, 3);
    assert_eq!(rows[1].get("name"), Some("Multi\nLine Co"));
    // The quoted newline moves the next record to line 5.
    assert_eq!(rows[2].line, 5);
    assert_eq!(rows[2].fields, [("name".to_owned(), "Solo".to_owned())]);
}

#[test]
fn dids() {
    let rows: Vec<_> = rows(data("dids.csv"), &DID_COLUMNS)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows[0].get("number"), Some("+14155550123"));
    assert_eq!(rows[0].get("clients_id"), Some("12"));
    assert_eq!(rows[0].get("accounts_id"), None);
    assert_eq!(rows[1].fields.len(), 1);
}
