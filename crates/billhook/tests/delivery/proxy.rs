//! Proxies from the environment: with `HTTP_PROXY` set, handler calls go through the
//! proxy (reqwest's client), as they would for any well-behaved HTTP client; without
//! it, straight to the handler (hyper's client without reqwest's layers).

use crate::harness::Server;
use crate::receiver::Receiver;
use crate::util::{client, http_handler, uid_of};

#[tokio::test]
async fn with_http_proxy_set_handler_calls_go_through_the_proxy() {
    // The receiver plays the proxy: a proxied request is sent to it, whatever host the
    // handler's URL names. The handler's own address has nothing listening.
    let proxy = Receiver::start().await;
    let nowhere = Receiver::reserved();
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
    assert!(nowhere.hits().is_empty());
}
