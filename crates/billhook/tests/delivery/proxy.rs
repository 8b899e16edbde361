//! How handler calls are sent: through the proxy the environment names (`HTTP_PROXY`),
//! as any well-behaved HTTP client does, else straight to the handler; credentials in a
//! handler's URL as basic authentication.

use crate::harness::Server;
use crate::receiver::Receiver;
use crate::util::{client, http_handler, uid_of};

#[tokio::test]
async fn with_http_proxy_set_handler_calls_go_through_the_proxy() {
    // The receiver plays the proxy: a proxied request is sent to it, whatever host the
    // handler's URL names. The handler's own address listens too, and must get nothing.
    let proxy = Receiver::start().await;
    let nowhere = Receiver::start().await;
    let proxy_url = proxy.url("");
    let s = Server::start_with(vec![("HTTP_PROXY", proxy_url.as_str()), ("NO_PROXY", "")]).await;
    http_handler(&s, "clients.create", &nowhere.url("/hook"), &[0]).await;
    let id = client(&s, "Acme").await;
    let uid = uid_of(&s, "clients.create", id).await;

    let hits = proxy.wait_hits("/hook", 1, 30).await;
    assert_eq!(hits.len(), 1, "the call reached the proxy");
    assert_eq!(hits[0].uid(), uid);
    assert_eq!(
        hits[0].header("host"),
        nowhere.url("").trim_start_matches("http://"),
        "for the handler's host"
    );
    assert!(
        nowhere.hits().is_empty(),
        "nothing went straight to the handler"
    );
}

/// Credentials in a handler's URL are sent as basic authentication.
#[tokio::test]
async fn credentials_in_a_handlers_url_are_sent_as_basic_authentication() {
    let r = Receiver::start().await;
    let s = Server::start().await;
    let url = r
        .url("/hook")
        .replacen("http://", "http://hook-user:s3cret@", 1);
    http_handler(&s, "clients.create", &url, &[0]).await;
    client(&s, "Acme").await;

    let hits = r.wait_hits("/hook", 1, 30).await;
    // base64("hook-user:s3cret")
    assert_eq!(
        hits[0].header("authorization"),
        "Basic aG9vay11c2VyOnMzY3JldA=="
    );
}
