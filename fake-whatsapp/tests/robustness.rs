//! Garbage, wrong handshakes and malformed admin requests get an error; everyone else keeps
//! being served.

mod support;

use futures_util::SinkExt;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_bad_handshakes_do_not_hurt_other_clients() {
    let fake = fake().await;
    let addr = fake.admin_url().trim_start_matches("http://").to_owned();

    // Raw TCP garbage.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    tcp.write_all(b"\x00\x01garbage\r\n\r\n").await.expect("write");
    drop(tcp);
    // A WebSocket that sends a wrong header, then one with a valid header and a garbage hello.
    for payload in [b"XX\x06\x03\x00\x00\x01\x00".to_vec(), b"WA\x06\x03\x00\x00\x04junk".to_vec()] {
        let (mut ws, _) = tokio_tungstenite::connect_async(fake.ws_url()).await.expect("ws");
        ws.send(Message::Binary(payload.into())).await.expect("send");
        let _ = ws.close(None).await;
    }
    // Malformed admin requests get 4xx.
    let admin = fake.admin_url();
    let status = tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
        let bad_json = agent.post(format!("{admin}/admin/scan")).send("{nope").expect("post").status().as_u16();
        let bad_qr = agent
            .post(format!("{admin}/admin/scan"))
            .send(r#"{"qr":"a,b","phone":"15550001"}"#)
            .expect("post")
            .status()
            .as_u16();
        let unknown_ref = agent
            .post(format!("{admin}/admin/scan"))
            .send(r#"{"qr":"2@nope,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,1","phone":"15550001"}"#)
            .expect("post")
            .status()
            .as_u16();
        let bad_jid = agent.post(format!("{admin}/admin/devices/nope/logout")).send("").expect("post").status().as_u16();
        (bad_json, bad_qr, unknown_ref, bad_jid)
    })
    .await
    .expect("admin calls");
    assert_eq!(status, (400, 400, 404, 400));

    // A real client still links and connects.
    let (client, linked) = linked_client(&fake, "15550001").await;
    assert!(client.client.is_logged_in());
    assert!(linked.jid.starts_with("15550001:"));
    fake.shutdown().await;
}
