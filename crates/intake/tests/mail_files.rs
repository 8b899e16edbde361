//! E-mails under tests/data, from raw bytes to rate files.

use billhook_domain::Timestamp;
use billhook_intake::{parse_message, rate_files, rates, Message, RateFile};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn message(name: &str) -> Message {
    parse_message(&data(name)).unwrap()
}

fn files(name: &str) -> Vec<RateFile> {
    rate_files(&message(name)).unwrap()
}

fn names(files: &[RateFile]) -> Vec<&str> {
    files.iter().map(|f| f.file_name.as_str()).collect()
}

#[test]
fn headers() {
    let m = message("rates_csv.eml");
    assert_eq!(
        m.message_id.as_deref(),
        Some("<20250115090000.1234@mail.carrier-a.example>")
    );
    assert_eq!(m.sender, "rates@carrier-a.example");
    assert_eq!(m.subject, "Rate deck A-Z 2025-02-01");
    assert_eq!(
        m.date,
        Some(Timestamp::parse("2025-01-15T09:00:00Z").unwrap())
    );
    assert_eq!(m.attachments.len(), 1);
    assert_eq!(m.attachments[0].content_type, "text/csv");
}

#[test]
fn base64_csv_attachment() {
    let files = files("rates_csv.eml");
    assert_eq!(names(&files), ["carrier_a_rates.csv"]);
    let rows: Vec<_> = rates(&files[0].data[..])
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1].prefix, "4420");
}

#[test]
fn quoted_printable_csv_named_by_extension() {
    let files = files("rates_quoted_printable.eml");
    assert_eq!(names(&files), ["Rates Q1.csv"]);
    assert_eq!(
        files[0].data,
        b"code;price;effective_date\r\n44;0.0068;2025-02-01\r\n33;0.0071;2025-02-01\r\n49;0.0099;2025-02-01"
    );
    assert_eq!(rates(&files[0].data[..]).unwrap().count(), 3);
}

#[test]
fn encoded_file_names_and_subject() {
    let m = message("rates_encoded_name.eml");
    assert_eq!(m.subject, "Tarifs été 2025");
    assert_eq!(m.sender, "tarifs@operateur-b.example");
    let files = rate_files(&m).unwrap();
    // RFC 2231 filename* wins over the RFC 2047 name=; the second has only name=.
    assert_eq!(names(&files), ["tarifs_été_2025.csv", "тарифы.csv"]);
}

#[test]
fn zip_of_csv() {
    let files = files("rates_zip.eml");
    assert_eq!(
        names(&files),
        [
            "carrier_a_decks.zip/deck/rates_emea.csv",
            "carrier_a_decks.zip/rates_americas.CSV"
        ]
    );
    let emea: Vec<_> = rates(&files[0].data[..])
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(emea.len(), 2);
    let americas: Vec<_> = rates(&files[1].data[..])
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(americas[1].prefix, "52");
    // The committed archive is the one inside the e-mail.
    assert_eq!(
        message("rates_zip.eml").attachments[0].data,
        data("rates.zip")
    );
}

#[test]
fn broken_encrypted_and_csv_less_zips_are_file_errors() {
    let e = rate_files(&message("broken_zip.eml")).unwrap_err();
    assert_eq!(e.file_name, "decks.zip");
    assert!(e.reason.starts_with("not a readable ZIP archive"), "{e}");

    let e = rate_files(&message("encrypted_zip.eml")).unwrap_err();
    assert_eq!(e.file_name, "protected.zip/secret.csv");
    assert!(e.reason.contains("encrypted"), "{e}");

    let e = rate_files(&message("zip_without_csv.eml")).unwrap_err();
    assert_eq!(e.file_name, "docs.zip");
    assert_eq!(e.reason, "the ZIP archive contains no CSV file");
    assert_eq!(
        e.to_string(),
        "docs.zip: the ZIP archive contains no CSV file"
    );
}

#[test]
fn no_rate_files() {
    let m = message("no_attachments.eml");
    assert_eq!(m.attachments.len(), 1, "the PDF is an attachment");
    assert_eq!(rate_files(&m).unwrap(), []);
    let m = message("plain.eml");
    assert!(m.attachments.is_empty());
    assert_eq!(m.subject, "Out of office");
    assert_eq!(rate_files(&m).unwrap(), []);
}

#[test]
fn unknown_sender_is_just_a_sender() {
    let m = message("unknown_sender.eml");
    assert_eq!(m.sender, "offers@unknown-carrier.example");
    assert_eq!(names(&rate_files(&m).unwrap()), ["offer.csv"]);
}

#[test]
fn a_message_that_is_the_csv() {
    assert_eq!(names(&files("csv_body.eml")), ["deck.csv"]);
}

#[test]
fn forwarded_as_attachment() {
    let m = message("forwarded_rates.eml");
    assert_eq!(m.sender, "ops@billhook.example");
    assert_eq!(names(&rate_files(&m).unwrap()), ["carrier_a_rates.csv"]);
}

#[test]
fn not_mail() {
    for input in [
        &b""[..],
        b"\x00\x01\x02",
        &data("not_mail.txt"),
        &data("rates.zip"),
    ] {
        assert!(
            parse_message(input).is_err(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn damaged_nested_message_is_no_panic() {
    // Found by fuzzing: refused in debug builds, partly read in release ones.
    if let Ok(m) = parse_message(&data("damaged_nested.eml")) {
        let _ = rate_files(&m);
    }
}
