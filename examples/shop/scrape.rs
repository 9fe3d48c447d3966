//! Reads a process's `/metrics` (feature `prometheus`): one HTTP/1.0 GET on a
//! plain socket, so the example needs no HTTP client library.

use modkit::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of `GET http://<addr><path>`; an error unless the status is 200.
pub async fn get(addr: &str, path: &str) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::unavailable(format!("{addr}{path}: no HTTP response")))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(Error::unavailable(format!("{addr}{path}: {status}")));
    }
    Ok(body.to_owned())
}

/// The sum of the samples of metric `name` in Prometheus text that carry
/// every label of `labels`; `None` when there is none.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching = text.lines().filter(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            && labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
    });
    let values: Vec<f64> = matching
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
