//! Linking by pairing code with the real whatsapp-rust client: `pair_with_code` asks the fake for
//! a code (`companion_hello`), a virtual phone types it (`admin().pair_code` or
//! `POST /admin/pair-code`), and the client completes the link as after a QR scan.

mod support;

use fake_whatsapp::{FakeWhatsApp, PairCodeError};
use support::*;
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::types::events::Event;

const PHONE: &str = "51900000001";

/// Starts a client, waits until it shows QR codes (its socket is up and unpaired), then asks
/// for a pairing code for `phone`.
async fn client_with_code(fake: &FakeWhatsApp, phone: &str) -> (TestClient, String) {
    let mut client = start_client(fake, memory_backend()).await;
    client.next_qr().await;
    let options = PairCodeOptions { phone_number: phone.to_owned(), ..Default::default() };
    let code = tokio::time::timeout(WAIT, client.client.pair_with_code(options))
        .await
        .expect("pair_with_code answers in time")
        .expect("the fake accepts companion_hello");
    assert_eq!(code.len(), 8, "{code}");
    (client, code)
}

/// Waits for `PairSuccess`, then `Connected` (a `Connected` first would make this time out).
async fn paired_then_connected(client: &mut TestClient) {
    client.wait_for("PairSuccess", |e| matches!(e, Event::PairSuccess(_)).then_some(())).await;
    client.connected().await;
}

/// A POST to the admin API, as (status, JSON body).
async fn post(fake: &FakeWhatsApp, path: &str, body: &str) -> (u16, serde_json::Value) {
    let url = format!("{}{path}", fake.admin_url());
    let body = body.to_owned();
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::config::Config::builder()
                .http_status_as_error(false)
                .timeout_global(Some(std::time::Duration::from_secs(60)))
                .build(),
        );
        let mut response =
            agent.post(&url).header("Content-Type", "application/json").send(body.as_str()).expect("post");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    })
    .await
    .expect("admin call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_code_links_and_connects() {
    let fake = fake().await;
    let (mut client, code) = client_with_code(&fake, PHONE).await;

    let typed = format!("{}-{}", &code[..4], &code[4..]).to_lowercase();
    let linked = fake.admin().pair_code(PHONE, &typed).await.expect("the typed code links");
    assert!(linked.jid.starts_with(&format!("{PHONE}:")), "{linked:?}");
    assert!(linked.lid.ends_with("@lid"), "{linked:?}");
    paired_then_connected(&mut client).await;

    assert!(client.client.is_logged_in());
    assert_eq!(client.client.lid().map(|l| l.to_string()), Some(linked.lid.clone()), "LID addressing as with QR");
    let devices = fake.admin().devices();
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0].jid, linked.jid);
    assert_eq!(devices[0].phone, PHONE);
    assert!(devices[0].connected && !devices[0].removed);
    client.handle.shutdown().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_code_links_nothing_and_the_right_one_still_does() {
    let fake = fake().await;
    let (mut client, code) = client_with_code(&fake, PHONE).await;

    let wrong = if code == "ZZZZZZZZ" { "YYYYYYYY" } else { "ZZZZZZZZ" };
    let err = fake.admin().pair_code(PHONE, wrong).await.expect_err("a wrong code does not link");
    assert!(matches!(err, PairCodeError::UnknownCode), "{err:?}");
    assert!(fake.admin().devices().is_empty());
    assert!(!client.client.is_logged_in());

    // Like a person retyping on the phone: the request is still pending.
    fake.admin().pair_code(PHONE, &code).await.expect("the right code links after a wrong one");
    paired_then_connected(&mut client).await;
    assert_eq!(fake.admin().devices().len(), 1);
    client.handle.shutdown().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_route_links_and_refuses_malformed_or_unknown_requests() {
    let fake = fake().await;
    let malformed = [
        "{nope",
        r#"{"phone":"51900000001"}"#,
        r#"{"phone":"51-900","code":"ABCD-EFGH"}"#,
        r#"{"phone":"51900000001","code":"ABC"}"#,
        r#"{"phone":"51900000001","code":"ABCD-EFGO"}"#,
    ];
    for body in malformed {
        assert_eq!(post(&fake, "/admin/pair-code", body).await.0, 400, "{body}");
    }
    let (status, answer) = post(&fake, "/admin/pair-code", r#"{"phone":"51900000009","code":"ABCD-EFGH"}"#).await;
    assert_eq!(status, 404, "no request for this number: {answer}");
    let err = fake.admin().pair_code("51900000009", "ABCDEFGH").await.expect_err("nothing pending");
    assert!(matches!(err, PairCodeError::NoRequest), "{err:?}");

    let (mut client, code) = client_with_code(&fake, PHONE).await;
    let wrong = if code == "ZZZZZZZZ" { "YYYY-YYYY" } else { "zzzz-zzzz" };
    let (status, answer) = post(&fake, "/admin/pair-code", &format!(r#"{{"phone":"{PHONE}","code":"{wrong}"}}"#)).await;
    assert_eq!(status, 404, "unknown code: {answer}");
    assert!(fake.admin().devices().is_empty());

    let (status, answer) = post(&fake, "/admin/pair-code", &format!(r#"{{"phone":"{PHONE}","code":"{code}"}}"#)).await;
    assert_eq!(status, 200, "{answer}");
    let jid = answer["jid"].as_str().expect("jid").to_owned();
    assert!(answer["lid"].as_str().is_some_and(|l| l.ends_with("@lid")), "{answer}");
    paired_then_connected(&mut client).await;
    assert_eq!(fake.admin().devices().into_iter().map(|d| d.jid).collect::<Vec<_>>(), vec![jid]);

    // Linked: the request is spent.
    let (status, _) = post(&fake, "/admin/pair-code", &format!(r#"{{"phone":"{PHONE}","code":"{code}"}}"#)).await;
    assert_eq!(status, 404);
    client.handle.shutdown().await;
    fake.shutdown().await;
}
