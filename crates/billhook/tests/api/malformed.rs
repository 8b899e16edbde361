//! No malformed request yields a 500 or takes the server down, and a refused request
//! writes nothing and raises no event. Also the API key check.

use serde_json::{json, Value};

use crate::harness::{assert_error, Server, KEY};

const JSON: (&str, &str) = ("Content-Type", "application/json");
const ADMIN: (&str, &str) = ("X-Api-Key", KEY);

/// Sends raw bytes with the given headers on a connection of its own (a refused oversized
/// body may leave its connection unusable); returns status and JSON (or text).
async fn send(
    s: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", s.base))
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Everything a refused request must not change: the events and the objects.
async fn snapshot(s: &Server) -> (usize, Vec<Value>) {
    let mut objects = Vec::new();
    for list in ["clients", "accounts", "charges", "payments"] {
        let (st, v) = s.get(&format!("/api/v1/{list}?limit=1000")).await;
        assert_eq!(st, 200, "{v}");
        objects.push(v);
    }
    (s.events().await.len(), objects)
}

/// One client with an account, a charge and a payment; returns a function that fills
/// `CID`, `AID` and `TID` (the charge) into a template.
async fn fixture(s: &Server) -> impl Fn(&str) -> String {
    let c = s.ok("/api/v1/clients", json!({"name": "Acme"}), 201).await;
    let cid = c["id"].to_string();
    let body = json!({"clients_id": c["id"], "name": "a", "auth_type": "ip", "ips": ["10.0.0.1"]});
    let a = s.ok("/api/v1/accounts", body, 201).await;
    let body = json!({"clients_id": c["id"], "amount": "5"});
    let t = s.ok("/api/v1/charges", body, 201).await;
    let body = json!({"clients_id": c["id"], "amount": "8"});
    s.ok("/api/v1/payments", body, 201).await;
    let (aid, tid) = (a["id"].to_string(), t["id"].to_string());
    move |tpl: &str| {
        tpl.replace("CID", &cid)
            .replace("AID", &aid)
            .replace("TID", &tid)
    }
}

/// A refusal of bad input: 400 `bad_request`, or 422 `validation_failed` with fields.
fn assert_refused(st: u16, e: &Value, what: &str) {
    match st {
        400 => assert_error(e, "bad_request"),
        422 => {
            assert_error(e, "validation_failed");
            assert!(e["error"]["data"]["fields"].is_object(), "{what}: {e}");
        }
        _ => panic!("{what}: expected 400 or 422, got {st}: {e}"),
    }
}

async fn assert_alive(s: &Server) {
    let (st, _) = send(s, "GET", "/healthz", &[], vec![]).await;
    assert_eq!(st, 200);
    let (st, v) = s.get("/api/v1/clients").await;
    assert_eq!(st, 200, "{v}");
}

const WRITES: [(&str, &str); 8] = [
    ("POST", "/api/v1/clients"),
    ("PATCH", "/api/v1/clients/CID"),
    ("PUT", "/api/v1/clients/CID/custom_fields"),
    ("POST", "/api/v1/accounts"),
    ("PATCH", "/api/v1/accounts/AID"),
    ("POST", "/api/v1/charges"),
    ("PATCH", "/api/v1/charges/TID"),
    ("POST", "/api/v1/payments"),
];

/// `"METHOD path body"`: the body is everything after the second space.
fn case(c: &str) -> (&str, &str, &str) {
    let mut parts = c.splitn(3, ' ');
    let mut next = || parts.next().unwrap_or("");
    (next(), next(), next())
}

const WRONG_TYPES: &[&str] = &[
    r#"POST /api/v1/clients {"name": 5}"#,
    r#"POST /api/v1/clients {"name": "x", "tags": "vip"}"#,
    r#"POST /api/v1/clients {"name": "x", "tags": [1, 2]}"#,
    r#"POST /api/v1/clients {"name": "x", "credit": true}"#,
    r#"POST /api/v1/clients {"name": "x", "credit": {"v": 1}}"#,
    r#"POST /api/v1/clients {"name": "x", "custom_fields": [1]}"#,
    r#"PATCH /api/v1/clients/CID {"name": ["x"]}"#,
    r#"PATCH /api/v1/clients/CID {"email": 12}"#,
    r#"POST /api/v1/accounts {"clients_id": "CID", "name": "b"}"#,
    r#"POST /api/v1/accounts {"clients_id": CID, "ips": "10.0.0.2"}"#,
    r#"PATCH /api/v1/accounts/AID {"enabled": "yes"}"#,
    r#"POST /api/v1/charges {"clients_id": "one", "amount": "1"}"#,
    r#"POST /api/v1/charges {"clients_id": CID.5, "amount": "1"}"#,
    r#"POST /api/v1/charges {"clients_id": CID, "amount": true}"#,
    r#"POST /api/v1/payments {"clients_id": CID, "amount": [1]}"#,
    r#"POST /api/v1/payments {"clients_id": CID, "amount": "1", "dt": 5}"#,
    r#"PATCH /api/v1/charges/TID {"notes": 7}"#,
];

/// Values outside an enumeration or not a decimal: 400 or 422 are both fine.
const BAD_VALUES: &[&str] = &[
    r#"POST /api/v1/clients {"name": "x", "status": "sleeping"}"#,
    r#"POST /api/v1/accounts {"clients_id": CID, "name": "b", "auth_type": "radius"}"#,
    r#"POST /api/v1/payments {"clients_id": CID, "amount": "abc"}"#,
    r#"POST /api/v1/payments {"clients_id": CID, "amount": "1,5"}"#,
    r#"POST /api/v1/payments {"clients_id": CID, "amount": "NaN"}"#,
    r#"POST /api/v1/payments {"clients_id": CID, "amount": " 1"}"#,
];

const HUGE_NUMBERS: &[&str] = &[
    r#"POST /api/v1/charges {"clients_id": CID, "amount": 1e30}"#,
    r#"POST /api/v1/charges {"clients_id": CID, "amount": "1e30"}"#,
    r#"POST /api/v1/payments {"clients_id": CID, "amount": 99999999999999999999}"#,
    r#"POST /api/v1/payments {"clients_id": CID, "amount": "99999999999999999999"}"#,
    r#"POST /api/v1/payments {"clients_id": CID, "amount": 1e400}"#,
    r#"POST /api/v1/payments {"clients_id": 99999999999999999999, "amount": "1"}"#,
    r#"POST /api/v1/payments {"clients_id": -99999999999999999999, "amount": 1}"#,
    r#"POST /api/v1/accounts {"clients_id": 99999999999999999999, "name": "a"}"#,
    r#"POST /api/v1/clients {"name": "x", "credit": 1e30}"#,
    r#"POST /api/v1/clients {"name": "x", "credit": "123456789012345678901234567"}"#,
    r#"PATCH /api/v1/charges/TID {"amount": 1e30}"#,
    r#"PATCH /api/v1/charges/TID {"amount": "9223372036854.775807"}"#,
];

#[tokio::test]
async fn bad_json_and_wrong_types_are_400_and_write_nothing() {
    let s = Server::start().await;
    let fill = fixture(&s).await;
    let before = snapshot(&s).await;
    let not_json = [
        r#"{"#,
        r#"{"name": "x",}"#,
        "nope",
        "{'a': 1}",
        r#"{"a": 1} x"#,
    ];
    let not_objects = ["[]", r#"[{"a": 1}]"#, "null", r#""text""#, "42", "true"];
    for body in not_json.iter().chain(&not_objects) {
        for (method, path) in WRITES {
            let (st, e) = s.raw(method, &fill(path), body).await;
            assert_eq!(st, 400, "{method} {path} {body}: {e}");
            assert_error(&e, "bad_request");
        }
    }
    // Said so, not in terms of our types ("expected struct ClientInput").
    for body in not_objects {
        let (_, e) = s.raw("POST", "/api/v1/clients", body).await;
        assert_eq!(
            e["error"]["message"], "the body must be a JSON object",
            "{body}: {e}"
        );
    }
    for c in WRONG_TYPES {
        let (method, path, body) = case(c);
        let (st, e) = s.raw(method, &fill(path), &fill(body)).await;
        assert_eq!(st, 400, "{c}: {e}");
        assert_error(&e, "bad_request");
    }
    for c in BAD_VALUES {
        let (method, path, body) = case(c);
        let (st, e) = s.raw(method, path, &fill(body)).await;
        assert_refused(st, &e, c);
    }
    // Not UTF-8 at all.
    let body = b"{\"name\": \"\xff\xfe\"}".to_vec();
    let (st, e) = send(&s, "POST", "/api/v1/clients", &[ADMIN, JSON], body).await;
    assert_eq!(st, 400, "{e}");
    assert_error(&e, "bad_request");
    assert_eq!(snapshot(&s).await, before);
    assert_alive(&s).await;
}

/// A body over the limit (2 MiB; a route's own for uploads) is a 413 in the error
/// format, not a 400 or axum's plain text.
#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let s = Server::start().await;
    let before = snapshot(&s).await;
    let body = format!(r#"{{"name": "{}"}}"#, "x".repeat(3 << 20));
    let (st, e) = s.raw("POST", "/api/v1/clients", &body).await;
    assert_eq!(st, 413, "{e}");
    assert_error(&e, "payload_too_large");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("2 MiB"),
        "{e}"
    );
    // A raw message over its route's own limit (64 MiB) is said the same way.
    let message = "x".repeat(65 << 20);
    let (st, e) = s
        .raw("POST", "/api/v1/email_rates/messages", &message)
        .await;
    assert_eq!(st, 413, "{e}");
    assert_error(&e, "payload_too_large");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("64 MiB"),
        "{e}"
    );
    assert_eq!(snapshot(&s).await, before);
    assert_alive(&s).await;
}

#[tokio::test]
async fn empty_bodies_write_nothing() {
    let s = Server::start().await;
    let fill = fixture(&s).await;
    let before = snapshot(&s).await;
    for path in ["clients", "accounts", "charges", "payments"] {
        let path = format!("/api/v1/{path}");
        let (st, e) = send(&s, "POST", &path, &[ADMIN, JSON], vec![]).await;
        assert_refused(st, &e, &path);
    }
    // An empty PATCH asks for no change (or is refused): either way nothing is written.
    let path = fill("/api/v1/clients/CID");
    let (st, e) = send(&s, "PATCH", &path, &[ADMIN, JSON], vec![]).await;
    assert!(st == 200 || st == 400, "{e}");
    assert_eq!(snapshot(&s).await, before);
}

#[tokio::test]
async fn huge_numbers_are_refused_without_writing() {
    let s = Server::start().await;
    let fill = fixture(&s).await;
    let before = snapshot(&s).await;
    for c in HUGE_NUMBERS {
        let (method, path, body) = case(c);
        let (st, e) = s.raw(method, &fill(path), &fill(body)).await;
        assert_refused(st, &e, c);
    }
    for path in [
        "clients/99999999999999999999",
        "payments/-99999999999999999999",
    ] {
        let (st, e) = s.get(&format!("/api/v1/{path}")).await;
        assert_eq!(st, 404, "{path}: {e}");
        assert_error(&e, "not_found");
    }
    assert_eq!(snapshot(&s).await, before);

    // The largest amounts are accepted until the balance would overflow; then refused.
    let client = fill("/api/v1/clients/CID");
    let cid: i64 = fill("CID").parse().unwrap();
    let big = json!({"clients_id": cid, "amount": "1000000000000"});
    let mut refused = 0;
    for _ in 0..12 {
        let n = s.events().await.len();
        let (_, old) = s.get(&client).await;
        let payments = format!("/api/v1/payments?clients_id={cid}");
        let (_, listed) = s.get(&payments).await;
        let (st, e) = s.post("/api/v1/payments", big.clone()).await;
        if st != 201 {
            assert_refused(st, &e, "overflowing payment");
            refused += 1;
            assert_eq!(s.events().await.len(), n);
            assert_eq!(s.get(&client).await.1, old);
            assert_eq!(
                s.get(&payments).await.1["total"],
                listed["total"],
                "no payment kept"
            );
        }
    }
    assert!(refused > 0, "12 × 10^12 cannot fit in the balance");
    assert_alive(&s).await;
}

#[tokio::test]
async fn unknown_and_non_integer_ids_are_not_found() {
    let s = Server::start().await;
    let _ids = fixture(&s).await;
    let before = snapshot(&s).await;
    let odd = "4242 0 -1 abc 1.5 1e3 0x10 %20 %EF%BC%91 1;DROP".split(' ');
    for base in ["clients", "accounts", "charges", "payments"] {
        for id in odd.clone() {
            let path = format!("/api/v1/{base}/{id}");
            for method in ["GET", "PATCH", "DELETE"] {
                let (st, e) = s.call(method, &path, Some(json!({"name": "x"}))).await;
                assert!(st == 404 || st == 400, "{method} {path}: {st} {e}");
                let code = if st == 404 {
                    "not_found"
                } else {
                    "bad_request"
                };
                assert_error(&e, code);
            }
        }
    }
    for (method, path) in [
        ("POST", "4242/archive"),
        ("POST", "abc/archive"),
        ("PUT", "4242/custom_fields"),
        ("GET", &"9".repeat(5000)),
    ] {
        let path = format!("/api/v1/clients/{path}");
        let (st, e) = s.call(method, &path, Some(json!({"a": 1}))).await;
        assert_eq!(st, 404, "{method} {path}: {e}");
    }
    assert_eq!(snapshot(&s).await, before);
    assert_alive(&s).await;
}

#[tokio::test]
async fn query_parameters_of_the_wrong_type_are_400() {
    let s = Server::start().await;
    let _ids = fixture(&s).await;
    let wrong = "clients?limit=abc clients?limit=1.5 clients?offset=-1 \
        clients?limit=99999999999999999999 accounts?clients_id=x \
        accounts?clients_id=99999999999999999999 charges?clients_id=1.5 \
        payments?offset=ten events?object_id=x events?from=yesterday";
    for path in wrong.split_whitespace() {
        let (st, e) = s.get(&format!("/api/v1/{path}")).await;
        assert_eq!(st, 400, "{path}: {e}");
        assert_error(&e, "bad_request");
        // The message names the parameter, the paging ones too.
        let name = path.split(['?', '=']).nth(1).unwrap();
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(name), "{path}: {message}");
    }
    // Past the paging's range, the message gives the range (it called 4294967296 no
    // valid number).
    let (st, e) = s.get("/api/v1/deliveries?offset=4294967296").await;
    assert_eq!(st, 400, "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("from 0 to 4294967295"), "{message}");
    // Well-typed extremes are fine.
    for (path, len) in [
        ("clients?limit=5000", 1),
        ("clients?offset=4294967295", 0),
        ("clients?q=%25%27%22%5C_", 0),
        ("clients?status=%F0%9F%9A%80", 0),
    ] {
        let (st, v) = s.get(&format!("/api/v1/{path}")).await;
        assert_eq!(st, 200, "{path}: {v}");
        let items = v["items"].as_array().map(Vec::len);
        assert_eq!(items, Some(len), "{path}: {v}");
    }
    let long = format!("/api/v1/clients?q={}", "x".repeat(1000));
    let (st, v) = s.get(&long).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["total"], 0);
}

#[tokio::test]
async fn unicode_round_trips_and_long_strings_are_refused() {
    let s = Server::start().await;
    let name = "Ωmega 客户 🚀 שלום e\u{301}";
    let body = json!({"name": name, "tags": ["ü", "😀"], "custom_fields": {"note": "naïve ☃"}});
    let c = s.ok("/api/v1/clients", body, 201).await;
    assert_eq!(c["name"], name);
    assert_eq!(c["tags"], json!(["ü", "😀"]));
    let (_, got) = s.get(&format!("/api/v1/clients/{}", c["id"])).await;
    assert_eq!(got, c);
    let (_, found) = s.get("/api/v1/clients?q=%F0%9F%9A%80").await;
    assert_eq!(found["total"], 1, "{found}");
    let body = json!({"clients_id": c["id"], "amount": "1", "notes": "€ 🚀"});
    let t = s.ok("/api/v1/charges", body, 201).await;
    assert_eq!(t["notes"], "€ 🚀");
    assert_eq!(s.events().await[0]["data"], c);

    let before = snapshot(&s).await;
    let huge = "Ж".repeat(100_000);
    let (client, charge) = (
        format!("/api/v1/clients/{}", c["id"]),
        format!("/api/v1/charges/{}", t["id"]),
    );
    for (method, path, body) in [
        ("POST", "/api/v1/clients", json!({"name": huge})),
        ("PATCH", &client, json!({"name": huge})),
        (
            "POST",
            "/api/v1/charges",
            json!({"clients_id": c["id"], "amount": "1", "notes": huge}),
        ),
        ("PATCH", &charge, json!({"notes": huge})),
    ] {
        let (st, e) = s.call(method, path, Some(body)).await;
        assert_refused(st, &e, path);
    }
    // A body far beyond any sane size is refused, not a crash.
    // The server may answer and close before it has read the body: the client then sees
    // the connection break while still writing, which is a refusal too.
    let body = format!(r#"{{"name": "{}"}}"#, "a".repeat(5 << 20));
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/clients", s.base))
        .header(ADMIN.0, ADMIN.1)
        .header(JSON.0, JSON.1)
        .body(body)
        .send()
        .await;
    if let Ok(resp) = resp {
        let st = resp.status().as_u16();
        assert!(st == 400 || st == 413 || st == 422, "{st}");
    }
    assert_eq!(snapshot(&s).await, before);
    assert_alive(&s).await;
}

const NUL_BODIES: &[&str] = &[
    r#"POST /api/v1/clients {"name": "a\u0000b"}"#,
    r#"POST /api/v1/clients {"name": "x", "email": "a\u0000b@x.io"}"#,
    r#"PATCH /api/v1/clients/CID {"name": "a\u0000b"}"#,
    r#"POST /api/v1/accounts {"clients_id": CID, "name": "a\u0000b", "ips": ["10.0.0.9"]}"#,
    r#"POST /api/v1/accounts {"clients_id": CID, "name": "n", "auth_type": "name", "login": "a\u0000b", "password": "p"}"#,
    r#"POST /api/v1/charges {"clients_id": CID, "amount": "1", "notes": "a\u0000b"}"#,
    r#"PATCH /api/v1/charges/TID {"notes": "a\u0000b"}"#,
];

#[tokio::test]
async fn a_nul_character_in_a_body_is_stored_or_refused() {
    let s = Server::start().await;
    let fill = fixture(&s).await;
    let mut failed = Vec::new();
    for c in NUL_BODIES {
        let (method, path, body) = case(c);
        let n = s.events().await.len();
        let (st, v) = s.raw(method, &fill(path), &fill(body)).await;
        match st {
            200 | 201 => assert!(v.to_string().contains(r"a\u0000b"), "{c}: {v}"),
            400 | 422 => assert_eq!(s.events().await.len(), n, "{c}"),
            _ => failed.push(format!("{c} -> {st} {v}")),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    assert_alive(&s).await;
}

#[tokio::test]
async fn a_nul_character_in_a_filter_is_never_a_500() {
    let s = Server::start().await;
    let _ids = fixture(&s).await;
    let mut failed = Vec::new();
    for path in [
        "clients?q=a%00b",
        "clients?status=%00",
        "events?events_id=%00",
    ] {
        let (st, v) = s.get(&format!("/api/v1/{path}")).await;
        match st {
            200 => assert_eq!(v["total"], 0, "{path}: {v}"),
            400 => assert_error(&v, "bad_request"),
            _ => failed.push(format!("{path} -> {st} {v}")),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[tokio::test]
async fn the_api_key_is_required() {
    let s = Server::start().await;
    let body = || br#"{"name": "Intruder"}"#.to_vec();
    let bearer = format!("Bearer {KEY}");
    for key in [
        None,
        Some(("X-Api-Key", "wrong-key")),
        Some(("X-Api-Key", "")),
        Some(("Authorization", "Bearer wrong-key")),
        Some(("Authorization", KEY)),
        Some(("Authorization", "Basic dGVzdDp0ZXN0")),
    ] {
        let headers: Vec<_> = [JSON].into_iter().chain(key).collect();
        for (method, path) in [("GET", "clients"), ("POST", "clients"), ("GET", "events")] {
            let path = format!("/api/v1/{path}");
            let (st, e) = send(&s, method, &path, &headers, body()).await;
            assert_eq!(st, 401, "{method} {path} {headers:?}: {e}");
            assert_error(&e, "unauthorized");
        }
    }
    let (st, e) = send(&s, "GET", "/api/v1/clients/1", &[], vec![]).await;
    assert_eq!(st, 401, "401 before 404: {e}");
    assert!(
        s.events().await.is_empty(),
        "a refused request raises nothing"
    );
    let (_, list) = s.get("/api/v1/clients").await;
    assert_eq!(list["total"], 0);

    let auth = ("Authorization", bearer.as_str());
    let (st, c) = send(&s, "POST", "/api/v1/clients", &[JSON, auth], body()).await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(c["name"], "Intruder");
    let (st, list) = send(&s, "GET", "/api/v1/clients", &[auth], vec![]).await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0], c);
    assert_eq!(s.events().await.len(), 1);
    let (st, _) = send(&s, "GET", "/healthz", &[], vec![]).await;
    assert_eq!(st, 200);
}

/// A create refuses a field its object does not have, naming it (a misspelt `emial`
/// was dropped with a 201, and the client made without its email), and makes nothing;
/// a field the object has but the request does not set (`id`, `balance`) passes, so a
/// body read and sent back makes a copy.
#[tokio::test]
async fn a_create_refuses_a_field_its_object_does_not_have() {
    let s = Server::start().await;
    let c = s.ok("/api/v1/clients", json!({"name": "Owner"}), 201).await;
    let cid = &c["id"];
    let p = json!({"name": "Plan", "period": "P1M", "fee": "1"});
    let p = s.ok("/api/v1/packages", p, 201).await;
    let creates = [
        (
            "clients",
            json!({"name": "Typo", "emial": "a@b.c"}),
            "emial",
        ),
        (
            "accounts",
            json!({"clients_id": cid, "name": "a", "ip": ["10.0.0.1"]}),
            "ip",
        ),
        (
            "subscriptions",
            json!({"clients_id": cid, "packages_id": p["id"], "start": "2030-01-01T00:00:00Z"}),
            "start",
        ),
        (
            "dids",
            json!({"number": "+15550100", "client_id": cid}),
            "client_id",
        ),
        (
            "charges",
            json!({"clients_id": cid, "amount": "1", "note": "x"}),
            "note",
        ),
        (
            "payments",
            json!({"clients_id": cid, "amount": 1, "memo": "x"}),
            "memo",
        ),
        (
            "packages",
            json!({"name": "P", "period": "P1M", "fees": "5"}),
            "fees",
        ),
        (
            "rate_tables",
            json!({"name": "T", "curency": "EUR"}),
            "curency",
        ),
    ];
    let events = s.events().await.len();
    for (kind, body, field) in creates {
        let path = format!("/api/v1/{kind}");
        let (_, before) = s.get(&path).await;
        let (st, e) = s.post(&path, body).await;
        assert_eq!(st, 422, "{kind}: {e}");
        assert_error(&e, "validation_failed");
        let why = &e["error"]["data"]["fields"][field];
        assert_eq!(why, "is not a field of this object", "{kind}: {e}");
        let (_, after) = s.get(&path).await;
        assert_eq!(after["total"], before["total"], "{kind}: nothing made");
    }
    // A misspelt field is named beside the field it meant, when that one is required:
    // "clients_id is required" alone did not say why.
    let misspelt = [
        (
            "accounts",
            json!({"client_id": cid, "name": "a"}),
            "client_id",
            "clients_id",
        ),
        ("clients", json!({"nmae": "Typo"}), "nmae", "name"),
        (
            "handlers",
            json!({"name": "h", "evnt": "clients.create", "task": "http://127.0.0.1:9/h"}),
            "evnt",
            "event",
        ),
    ];
    for (kind, body, typo, meant) in misspelt {
        let (st, e) = s.post(&format!("/api/v1/{kind}"), body).await;
        assert_eq!(st, 422, "{kind}: {e}");
        let fields = &e["error"]["data"]["fields"];
        assert_eq!(fields[typo], "is not a field of this object", "{kind}: {e}");
        assert_eq!(fields[meant], "is required", "{kind}: {e}");
    }
    // So is it beside a status no create gives.
    let bodies = [
        (
            "clients",
            json!({"name": "x", "status": "archived", "emial": "a@b.c"}),
        ),
        (
            "dids",
            json!({"number": "+15550198", "status": "blocked", "clients": 1}),
        ),
    ];
    for (kind, body) in bodies {
        let (st, e) = s.post(&format!("/api/v1/{kind}"), body).await;
        assert_eq!(st, 422, "{kind}: {e}");
        let fields = e["error"]["data"]["fields"].as_object().expect("fields");
        assert!(fields["status"].is_string(), "{kind}: {e}");
        assert_eq!(fields.len(), 2, "{kind}: the typo named too: {e}");
    }
    // A read-only field passes only with a value its object can hold (they passed with
    // a 201): a wrong type is a 400, as in a field the create sets; a value of the right
    // type that is none (a time, an amount) a 422 on it.
    let read_only = [
        ("clients", json!({"name": "n", "id": "abc"}), 400, "id"),
        (
            "clients",
            json!({"name": "n", "created_at": "garbage"}),
            422,
            "created_at",
        ),
        (
            "clients",
            json!({"name": "n", "balance": "abc"}),
            422,
            "balance",
        ),
        (
            "dids",
            json!({"number": "+15550199", "created_at": 5}),
            400,
            "created_at",
        ),
        (
            "accounts",
            json!({"clients_id": cid, "name": "a", "updated_at": "x"}),
            422,
            "updated_at",
        ),
    ];
    for (kind, body, status, field) in read_only {
        let path = format!("/api/v1/{kind}");
        let (_, before) = s.get(&path).await;
        let (st, e) = s.post(&path, body).await;
        assert_eq!(st, status, "{kind}.{field}: {e}");
        if status == 400 {
            assert_error(&e, "bad_request");
            let message = e["error"]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with("read-only field"), "{e}");
            assert!(message.contains(field), "{e}");
        } else {
            assert_error(&e, "validation_failed");
            assert!(e["error"]["data"]["fields"][field].is_string(), "{e}");
        }
        let (_, after) = s.get(&path).await;
        assert_eq!(
            after["total"], before["total"],
            "{kind}.{field}: nothing made"
        );
    }
    assert_eq!(s.events().await.len(), events, "no event raised");
    // A blank template's nulls in read-only fields are no values: they pass.
    let blank = json!({"name": "Blank", "id": null, "created_at": null, "balance": null});
    let made = s.ok("/api/v1/clients", blank, 201).await;
    assert!(
        made["id"].is_i64() && made["created_at"].is_string(),
        "{made}"
    );
    // An object read and posted back (its id, balance, times included) is a copy.
    let copy = s.ok("/api/v1/clients", c.clone(), 201).await;
    assert_ne!(copy["id"], c["id"]);
    assert_eq!(copy["name"], c["name"]);
    let a = json!({"clients_id": cid, "name": "a", "ips": ["10.0.0.1"]});
    let sub = json!({"clients_id": cid, "packages_id": p["id"]});
    let d = json!({"number": "+15550101"});
    let copied = [
        ("accounts", a),
        ("subscriptions", sub),
        ("dids", d),
        (
            "charges",
            json!({"clients_id": cid, "amount": "1", "notes": "n"}),
        ),
        ("payments", json!({"clients_id": cid, "amount": "1"})),
        (
            "packages",
            json!({"name": "Copied", "period": "P1M", "fee": "2"}),
        ),
        ("rate_tables", json!({"name": "Copied"})),
        (
            "handlers",
            json!({"name": "h", "event": "clients.create", "task": "http://127.0.0.1:9/h"}),
        ),
    ];
    for (kind, body) in copied {
        let path = format!("/api/v1/{kind}");
        let made = s.ok(&path, body, 201).await;
        // As read: a handler's create answers with its secret, which no body sets.
        let (_, mut again) = s.get(&format!("{path}/{}", made["id"])).await;
        if kind == "dids" {
            again["number"] = json!("+15550102"); // numbers are unique
        }
        let copy = s.ok(&path, again, 201).await;
        assert_ne!(copy["id"], made["id"], "{kind}");
    }
}

/// A PATCH refuses `null` for a field that cannot be empty, a 422 naming it "cannot be
/// null" (it was read as absent, and the 200 left the caller believing it cleared); a
/// field that can be empty is cleared by it, and an object read and sent back, its
/// empty fields `null`, passes.
#[tokio::test]
async fn a_patch_refuses_null_for_a_field_that_cannot_be_empty() {
    let s = Server::start().await;
    let c = s
        .ok(
            "/api/v1/clients",
            json!({"name": "Acme", "email": "a@b.c"}),
            201,
        )
        .await;
    let cid = &c["id"];
    let body = json!({"clients_id": cid, "name": "a", "ips": ["10.0.0.1"], "login": "l"});
    let a = s.ok("/api/v1/accounts", body, 201).await;
    let t = s.ok(
        "/api/v1/charges",
        json!({"clients_id": cid, "amount": "1", "notes": "n"}),
        201,
    );
    let t = t.await;
    let d = s
        .ok("/api/v1/dids", json!({"number": "+15550100"}), 201)
        .await;
    let p = json!({"name": "Plan", "period": "P1M", "fee": "1"});
    let p = s.ok("/api/v1/packages", p, 201).await;
    let r = json!({"name": "Deck", "email_sender": "x@y"});
    let r = s.ok("/api/v1/rate_tables", r, 201).await;
    let path = |kind: &str, o: &Value| format!("/api/v1/{kind}/{}", o["id"]);
    let refused = [
        ("clients", &c, "name"),
        ("clients", &c, "credit"),
        ("clients", &c, "tags"),
        ("accounts", &a, "ips"),
        ("accounts", &a, "enabled"),
        ("charges", &t, "amount"),
        ("dids", &d, "number"),
        ("packages", &p, "fee"),
        ("rate_tables", &r, "name"),
    ];
    let events = s.events().await.len();
    for (kind, object, field) in refused {
        let (_, was) = s.get(&path(kind, object)).await;
        let (st, e) = s.patch(&path(kind, object), json!({ field: null })).await;
        assert_eq!(st, 422, "{kind}.{field}: {e}");
        assert_error(&e, "validation_failed");
        assert_eq!(e["error"]["data"]["fields"][field], "cannot be null", "{e}");
        let (_, now) = s.get(&path(kind, object)).await;
        assert_eq!(now, was, "{kind}: nothing changed");
    }
    // A null in a field the PATCH does not set says what the field is, not that it
    // cannot be null: a typo is no field, and the balance moves with transactions.
    let elsewhere = [
        ("emial", "is not a field of this object"),
        ("balance", "moves with the client's charges and payments"),
    ];
    for (field, why) in elsewhere {
        let (st, e) = s.patch(&path("clients", &c), json!({ field: null })).await;
        assert_eq!(st, 422, "{field}: {e}");
        assert_eq!(e["error"]["data"]["fields"][field], why, "{e}");
    }
    assert_eq!(s.events().await.len(), events, "no event raised");
    // What can be empty is cleared by null.
    let cleared = [
        ("clients", &c, "email"),
        ("accounts", &a, "login"),
        ("charges", &t, "notes"),
        ("rate_tables", &r, "email_sender"),
    ];
    for (kind, object, field) in cleared {
        let (st, v) = s.patch(&path(kind, object), json!({ field: null })).await;
        assert_eq!((st, &v[field]), (200, &Value::Null), "{kind}.{field}: {v}");
        // Read and sent back, with its null, it passes.
        let (_, read) = s.get(&path(kind, object)).await;
        let (st, v) = s.patch(&path(kind, object), read.clone()).await;
        assert_eq!(st, 200, "{kind}: {v}");
    }
    let (_, read) = s.get(&path("dids", &d)).await;
    assert!(read["hold_until"].is_null(), "{read}");
    let (st, v) = s.patch(&path("dids", &d), read).await;
    assert_eq!(st, 200, "{v}");
    // A held DID's hold is not cleared by a PATCH: only its transitions change it.
    let held = path("dids", &d);
    s.ok(&format!("{held}/activate"), json!({"clients_id": cid}), 200)
        .await;
    s.ok(&format!("{held}/hold"), json!({"hold_days": 1}), 200)
        .await;
    for field in ["hold_until", "status_after_hold"] {
        let (st, e) = s.patch(&held, json!({ field: null })).await;
        assert_eq!(st, 422, "{field}: {e}");
        assert!(e["error"]["data"]["fields"][field].is_string(), "{e}");
    }
}
