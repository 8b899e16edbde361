//! Rate-deck e-mails: the few headers the application matches on and the
//! attachments, decoded.
//!
//! MIME is a minefield of encodings (base64, quoted-printable, RFC 2047 and
//! RFC 2231 file names, legacy charsets), so the parsing itself is left to
//! `mail-parser`, which handles them and never panics on bad input. This module
//! only turns its borrowed tree into plain owned values.

use mail_parser::{HeaderName, MessageParser, MessagePart, MimeHeaders};

use billhook_domain::Timestamp;

/// How deep attached messages (forwards "as attachment") are followed.
const MAX_NESTING: usize = 4;

/// The parts of an e-mail billhook cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// As in the header, with angle brackets: `<abc@host>`.
    pub message_id: Option<String>,
    /// The bare address of the first `From` mailbox, lowercase; empty if none.
    pub sender: String,
    /// Decoded subject; empty if none.
    pub subject: String,
    /// The `Date` header, if present and valid.
    pub date: Option<Timestamp>,
    /// Attachments in message order, including those of attached messages.
    pub attachments: Vec<Attachment>,
}

/// One attached file, decoded from its transfer encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Decoded (RFC 2047/2231) file name, if the part has one.
    pub file_name: Option<String>,
    /// Lowercase `type/subtype`; `text/plain` without a Content-Type (RFC 2045).
    pub content_type: String,
    /// The decoded bytes. Text parts are converted to UTF-8 from their charset.
    pub data: Vec<u8>,
}

/// The input is not an e-mail at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MailError {
    /// Human-readable reason.
    pub message: String,
}

/// Parses a raw RFC 822 / MIME message.
pub fn parse_message(raw: &[u8]) -> Result<Message, MailError> {
    let not_mail = || MailError {
        message: "not an e-mail message (no mail headers found)".into(),
    };
    // mail-parser 0.11.9 has a `debug_assert!` that fires on some damaged
    // nested messages (found by fuzzing, tests/data/damaged_nested.eml). In
    // release builds it is compiled out and the parser recovers; in debug builds
    // it would panic, so the call is guarded and the message refused instead.
    let parsed = std::panic::catch_unwind(|| MessageParser::default().parse(raw))
        .map_err(|_| MailError {
            message: "damaged MIME structure".into(),
        })?
        .ok_or_else(not_mail)?;
    // mail-parser takes almost anything for a header; a message has at least
    // one standard one (From, Date, Subject, Content-Type, ...).
    let standard = |header: &&mail_parser::Header<'_>| !matches!(header.name, HeaderName::Other(_));
    if !parsed.headers().iter().any(|h| standard(&h)) {
        return Err(not_mail());
    }
    let sender = parsed
        .from()
        .and_then(|from| from.first())
        .and_then(|addr| addr.address())
        .map(|address| address.trim().to_lowercase())
        .unwrap_or_default();
    let date = parsed
        .date()
        .filter(|date| date.is_valid())
        .map(|date| Timestamp::from_micros(date.to_timestamp().saturating_mul(1_000_000)));
    let mut attachments = Vec::new();
    collect_attachments(&parsed, 0, &mut attachments);
    Ok(Message {
        message_id: parsed.message_id().map(|id| format!("<{id}>")),
        sender,
        subject: parsed.subject().unwrap_or_default().to_owned(),
        date,
        attachments,
    })
}

fn collect_attachments(
    message: &mail_parser::Message<'_>,
    depth: usize,
    out: &mut Vec<Attachment>,
) {
    for part in message.attachments() {
        match part.message() {
            Some(nested) if depth < MAX_NESTING => collect_attachments(nested, depth + 1, out),
            Some(_) => {}
            None => out.push(attachment(part)),
        }
    }
    // A message that *is* the file (Content-Type: text/csv, no multipart) has
    // its only part taken as the body; it is still an attachment to us.
    let root = message.root_part();
    if message.attachment_count() == 0 && !root.is_multipart() && !root.is_message() {
        let content_type = content_type(root);
        let is_body = matches!(content_type.as_str(), "text/plain" | "text/html");
        if root.attachment_name().is_some() || !is_body {
            out.push(attachment(root));
        }
    }
}

fn attachment(part: &MessagePart<'_>) -> Attachment {
    Attachment {
        file_name: part.attachment_name().map(str::to_owned),
        content_type: content_type(part),
        data: part.contents().to_vec(),
    }
}

fn content_type(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(subtype) => format!("{}/{}", ct.ctype(), subtype).to_lowercase(),
            None => ct.ctype().to_lowercase(),
        },
        // RFC 2045: no Content-Type means text/plain.
        None => "text/plain".into(),
    }
}
