//! "Is this number on WhatsApp": one or a batch, with JID and LID, cached, within the session's
//! quota, and only through a connected session.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_are_checked_cached_and_limited_per_session() {
    let fake = fake().await;
    let dir = temp_dir();
    given_sessions(&dir, r#"[{"sessionId":"sin_vincular"}]"#).await;
    let app = TestApp::spawn_with(config(&fake, &dir, &[("CONTACT_CHECKS_PER_MINUTE", "3")])).await;
    link(&app, &fake, "consultas", "51900000080").await;

    let (s, one) =
        app.request("GET", "/api/sessions/consultas/contacts/+51%20987%20000%20080", Some(TOKEN), None).await;
    assert_eq!(s, 200, "{one}");
    assert_eq!((one["phone"].as_str(), one["onWhatsApp"].as_bool()), (Some("51987000080"), Some(true)));
    assert_eq!(one["jid"].as_str(), Some("51987000080@s.whatsapp.net"));
    assert_eq!(one["lid"].as_str(), fake.admin().lid("51987000080").as_deref(), "the LID WhatsApp knows");

    let body = json!({"phones": ["15550999", 51987000081u64, "51987000080"]}).to_string();
    let (s, batch) = app.request("POST", "/api/sessions/consultas/contacts/check", Some(TOKEN), Some(body)).await;
    assert_eq!(s, 200, "{batch}");
    let answers: Vec<(Option<&str>, Option<bool>)> = batch["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| (r["phone"].as_str(), r["onWhatsApp"].as_bool()))
        .collect();
    assert_eq!(
        answers,
        [(Some("15550999"), Some(false)), (Some("51987000081"), Some(true)), (Some("51987000080"), Some(true))]
    );
    assert_eq!(batch["results"][0]["jid"], serde_json::Value::Null);

    // Three numbers asked so far (one was cached): the quota of 3 a minute is used up.
    let (s, limited) = app.request("GET", "/api/sessions/consultas/contacts/51987000082", Some(TOKEN), None).await;
    assert_eq!((s, limited["error"]["code"].as_str()), (429, Some("RATE_LIMITED")), "{limited}");
    let (s, cached) = app.request("GET", "/api/sessions/consultas/contacts/15550999", Some(TOKEN), None).await;
    assert_eq!((s, cached["onWhatsApp"].as_bool()), (200, Some(false)), "cached answers cost nothing");

    let too_many: Vec<String> = (0..51).map(|n| format!("5198700{n:04}")).collect();
    let (s, answer) = app
        .request(
            "POST",
            "/api/sessions/consultas/contacts/check",
            Some(TOKEN),
            Some(json!({"phones": too_many}).to_string()),
        )
        .await;
    assert_eq!((s, answer["error"]["code"].as_str()), (400, Some("TOO_MANY_PHONES")));
    let (s, answer) = app.request("GET", "/api/sessions/consultas/contacts/12", Some(TOKEN), None).await;
    assert_eq!((s, answer["error"]["code"].as_str()), (400, Some("INVALID_PHONE")));
    let (s, answer) = app.request("GET", "/api/sessions/sin_vincular/contacts/51987000083", Some(TOKEN), None).await;
    assert_eq!((s, answer["error"]["code"].as_str()), (409, Some("SESSION_NOT_CONNECTED")));
    let (s, answer) = app.request("GET", "/api/sessions/nadie/contacts/51987000083", Some(TOKEN), None).await;
    assert_eq!((s, answer["error"]["code"].as_str()), (404, Some("SESSION_NOT_FOUND")));
    app.stop().await;
    fake.shutdown().await;
}
