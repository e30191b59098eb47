//! A number's credentials in Postgres: linked through the fake with nothing written to
//! `SESSIONS_DIR`, it sends; the gateway restarts on a new pool and the number reconnects without
//! a scan and sends again (its Signal sessions survived); a logout wipes its rows, and the next
//! gateway finds it unlinked. The rest of the state stays on the files in both passes of the
//! suite: credentials in one schema and leases in another is no setup a user can make.

use std::sync::Arc;

use whatsapp_gateway::domain::SessionId;
use whatsapp_gateway::storage::CredentialStore;

use crate::support::postgres::Schema;
use crate::support::*;

/// Sends a PDF and waits until the phone has it.
async fn deliver(app: &TestApp, session: &str, tag: &str) {
    let (status, accepted) = app.send_pdf(session, "51987000091", &pdf(tag), None).await;
    assert_eq!(status, 202, "{accepted}");
    app.wait_status(accepted["messageId"].as_str().unwrap(), "delivered").await;
}

#[tokio::test]
async fn a_number_linked_with_credentials_in_postgres_reconnects_after_a_restart_without_a_scan() {
    let fake = fake().await;
    let dir = temp_dir();
    let schema = Schema::fresh().await;
    let session = SessionId::parse("nube").unwrap();

    let db = schema.connect().await;
    let app = TestApp::spawn_with_credentials(files_config(&fake, &dir, &[]), Arc::new(db.credentials())).await;
    let jid = link(&app, &fake, "nube", "51900000091").await;
    deliver(&app, "nube", "before the restart").await;
    assert!(!dir.join("sessions/nube/whatsapp.db").exists(), "no credentials on disk");
    assert!(db.credentials().has_credentials(&session).await.unwrap(), "the device row is in Postgres");
    app.stop().await;
    db.close().await;

    // A new gateway, a new pool: the number logs in with what Postgres kept.
    let mut events = fake.subscribe();
    let db = schema.connect().await;
    let app = TestApp::spawn_with_credentials(files_config(&fake, &dir, &[]), Arc::new(db.credentials())).await;
    wait_event(&mut events, |e| {
        matches!(e, fake_whatsapp::FakeEvent::DeviceLoggedIn { jid: j } if *j == jid).then_some(())
    })
    .await;
    wait_session(&app, "nube", "connected again", |s| s["status"] == "connected").await;
    let (_, view) = app.request("GET", "/api/sessions/nube", Some(TOKEN), None).await;
    assert_eq!(view["me"]["jid"], jid.as_str(), "the same account: {view}");
    deliver(&app, "nube", "after the restart").await;

    // Logout: unlinked on the phone, and its rows are gone.
    let (status, out) = app.request("POST", "/api/sessions/nube/logout", Some(TOKEN), None).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("logged_out")), "{out}");
    assert!(fake.admin().devices().iter().any(|d| d.jid == jid && d.removed), "unlinked on the phone");
    assert!(!db.credentials().has_credentials(&session).await.unwrap(), "credentials wiped");
    app.stop().await;

    // The next gateway finds the session unlinked: it waits for a scan instead of dialling.
    let app = TestApp::spawn_with_credentials(files_config(&fake, &dir, &[]), Arc::new(db.credentials())).await;
    let (status, view) = app.request("GET", "/api/sessions/nube", Some(TOKEN), None).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("disconnected")), "{view}");
    app.stop().await;
    fake.shutdown().await;
}
