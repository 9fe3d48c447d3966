//! The subscription's line protocol: one JSON [`Update`] per line, bounded.

use super::Update;
use mod_api::{Error, Result};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// The longest line a subscriber reads (a topology of some hundred nodes
/// fits many times over); a longer one is refused before it is buffered.
pub const MAX_LINE: usize = 64 * 1024;

/// Reads the next update; `Ok(None)` at the end of the stream. A line above
/// [`MAX_LINE`] or that is not an [`Update`] is an `InvalidInput` error.
pub async fn read_update<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Option<Update>> {
    let mut line = Vec::new();
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(Error::invalid_input("topology stream ended inside a line"))
            };
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if line.len() + take > MAX_LINE + 1 {
            return Err(Error::invalid_input(format!(
                "topology line longer than {MAX_LINE} bytes"
            )));
        }
        line.extend_from_slice(&chunk[..take]);
        reader.consume(take);
        if done {
            break;
        }
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|e| Error::invalid_input("not a topology update").with_source(e))
}

/// Writes `update` as one line.
pub async fn write_update<W: AsyncWrite + Unpin>(writer: &mut W, update: &Update) -> Result<()> {
    let mut line = serde_json::to_vec(update)
        .map_err(|e| Error::internal("cannot encode a topology update").with_source(e))?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;
    use mod_api::ErrorKind;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn round_trip_and_refusals() {
        let update = Update::Topology(Topology {
            group: "g".into(),
            epoch: 3,
            ..Default::default()
        });
        let mut buf = Vec::new();
        write_update(&mut buf, &update).await.unwrap();
        write_update(&mut buf, &update).await.unwrap();
        let mut reader = BufReader::new(&buf[..]);
        assert_eq!(
            read_update(&mut reader).await.unwrap(),
            Some(update.clone())
        );
        assert_eq!(read_update(&mut reader).await.unwrap(), Some(update));
        assert_eq!(read_update(&mut reader).await.unwrap(), None);

        let long = vec![b'x'; MAX_LINE + 10];
        let err = read_update(&mut BufReader::new(&long[..]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let err = read_update(&mut BufReader::new(&b"{\"nope\":1}\n"[..]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
}
