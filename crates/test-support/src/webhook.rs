//! A local webhook receiver: a loopback HTTP/1.1 server that answers every
//! POST with 200 and hands its body to the test, checking the path.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

/// Starts a receiver for POSTs to `path`; returns its URL and the bodies
/// as they arrive. A request to another path fails the test.
pub async fn receiver(path: &str) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    let expected = format!("POST {path} HTTP/1.1");
    let (bodies, received) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if body.len() >= length || n == 0 {
                    assert!(head.starts_with(&expected), "{head}");
                    socket
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await
                        .unwrap();
                    bodies.send(body.to_owned()).await.unwrap();
                    break;
                }
            }
        }
    });
    (url, received)
}
