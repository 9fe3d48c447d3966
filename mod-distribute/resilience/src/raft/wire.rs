//! The wire format between voters: frames of a `u32` big-endian length and
//! a JSON body, carrying one [`Request`] or one [`Response`].

use std::fmt;
use std::io;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::TypeConfig;
use crate::consensus::{Command, VoterId};

/// The largest frame body a voter sends or accepts (16 MiB).
pub(crate) const MAX_FRAME: usize = 16 * 1024 * 1024;

/// One RPC from a voter to another.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Replicate log entries, or heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Ask for a vote.
    Vote(VoteRequest<VoterId>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A proposal forwarded to the leader; answered with its log index.
    Propose(Command),
}

/// The answer to a [`Request`] of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    /// See [`Request::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<VoterId>, RaftError<VoterId>>),
    /// See [`Request::Vote`].
    Vote(Result<VoteResponse<VoterId>, RaftError<VoterId>>),
    /// See [`Request::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<VoterId>, RaftError<VoterId, InstallSnapshotError>>,
    ),
    /// See [`Request::Propose`]: the committed entry's log index.
    Propose(Result<u64, mod_api::Error>),
}

/// Why a frame could not be written or read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The socket failed or closed.
    Io(io::Error),
    /// The body is over [`MAX_FRAME`] bytes (its announced or encoded size).
    TooLarge(usize),
    /// The body is not the JSON of the expected message.
    Codec(serde_json::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "raft transport i/o: {e}"),
            FrameError::TooLarge(len) => {
                write!(
                    f,
                    "raft frame of {len} bytes is over the {MAX_FRAME} byte limit"
                )
            }
            FrameError::Codec(e) => write!(f, "raft frame is not valid: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            FrameError::TooLarge(_) => None,
            FrameError::Codec(e) => Some(e),
        }
    }
}

/// `message` as one frame (length prefix included), refused over [`MAX_FRAME`].
pub(crate) fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0; 4];
    serde_json::to_writer(&mut frame, message).map_err(FrameError::Codec)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        tracing::warn!(
            len,
            max = MAX_FRAME,
            "raft: refusing to send an oversized frame"
        );
        return Err(FrameError::TooLarge(len));
    }
    // Fits: `len <= MAX_FRAME < u32::MAX`.
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// Reads one frame from `reader` and decodes its body; a length over
/// [`MAX_FRAME`] is refused before anything is allocated.
pub(crate) async fn read_frame<R, T>(reader: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut header = [0; 4];
    reader
        .read_exact(&mut header)
        .await
        .map_err(FrameError::Io)?;
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        tracing::warn!(len, max = MAX_FRAME, "raft: refusing an oversized frame");
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await.map_err(FrameError::Io)?;
    serde_json::from_slice(&body).map_err(FrameError::Codec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::Command;

    #[tokio::test]
    async fn frames_round_trip() {
        let command = Command::Report {
            voter: 2,
            node: "a:1".into(),
            down: true,
        };
        let frame = encode(&Request::Propose(command.clone())).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let decoded: Request = read_frame(&mut frame.as_slice()).await.unwrap();
        assert!(matches!(decoded, Request::Propose(c) if c == command));
    }

    #[tokio::test]
    async fn oversized_and_bad_frames_are_refused_with_typed_errors() {
        let header = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let err = read_frame::<_, Request>(&mut header.as_slice())
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(n) if n == MAX_FRAME + 1));

        let huge = Request::Propose(Command::Report {
            voter: 1,
            node: "x".repeat(MAX_FRAME),
            down: true,
        });
        assert!(matches!(encode(&huge), Err(FrameError::TooLarge(_))));

        let mut garbage = 3u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(b"{{{");
        let err = read_frame::<_, Request>(&mut garbage.as_slice())
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Codec(_)));

        let truncated = [0u8, 0, 0, 9, b'{'];
        let err = read_frame::<_, Request>(&mut truncated.as_slice())
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Io(_)));
    }
}
