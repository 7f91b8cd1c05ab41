//! The wire protocol between the scheduler and worker processes.
//!
//! Every message is one *frame*: a 4-byte big-endian payload length followed by the payload, a
//! JSON-encoded [`WorkerMsg`] or [`ServerMsg`]. Frames larger than [`MAX_FRAME`] (before the
//! hello is accepted: [`HELLO_MAX`]) are refused before anything is allocated for them, and a
//! frame's buffer grows only as its bytes arrive, never to the announced length up front.
//! Messages carry plain data (block ROIs, error text), never code or opaque objects. With TLS
//! (see `tls.rs`) the frames travel inside a TLS 1.3 session.
//!
//! A session:
//!
//! 1. The worker connects (and, with TLS, completes the handshake, checking the scheduler's
//!    certificate against the fingerprint in its context) and sends [`WorkerMsg::Hello`] with the protocol version, the run's
//!    token (from `BLOCKWISE_CONTEXT`), its task and launch id. A wrong token or version gets
//!    [`ServerMsg::Refused`] and the connection is closed (and logged).
//! 2. The server answers [`ServerMsg::Welcome`] and then pushes up to `prefetch` blocks
//!    ([`ServerMsg::Blocks`]); the worker processes them in order and reports them in batches
//!    ([`WorkerMsg::Done`]), each report freeing room for another block. A report carries the
//!    block's output (compact JSON, as a string) for tasks with outputs, or its error and the
//!    kind of failure. Session frames from workers may be larger than [`MAX_FRAME`] by twice
//!    the run's output cap (see [`session_limit`]), so that a capped output always fits.
//! 3. The worker sends [`WorkerMsg::Heartbeat`] when it has sent nothing for a heartbeat
//!    interval (a background thread does this while a long block runs); the server sends
//!    [`ServerMsg::Ping`] to idle workers. Silence for longer than the timeout on either side
//!    means the peer is gone.
//! 4. The server ends the session with [`ServerMsg::Shutdown`] (the task is done); a worker that
//!    reaches its lifetime sends [`WorkerMsg::Retire`] with the blocks it has not started, then
//!    finishes its current block and leaves.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

use crate::geometry::Roi;

/// The protocol version; both sides must agree (2: block outputs in reports).
pub(crate) const PROTOCOL_VERSION: u32 = 2;

/// The largest frame payload accepted, in bytes.
pub(crate) const MAX_FRAME: usize = 16 << 20;

/// The largest frame accepted from a peer that has not yet presented the run's token (its
/// hello): a few KiB, so that unauthenticated connections cannot make the scheduler allocate.
pub(crate) const HELLO_MAX: usize = 4 << 10;

/// The largest frame a worker may send in a session of a run whose outputs are capped at
/// `max_output` bytes: [`MAX_FRAME`] plus twice the cap (a JSON string escapes a byte of JSON
/// into at most two).
pub(crate) fn session_limit(max_output: usize) -> usize {
    MAX_FRAME.saturating_add(max_output.saturating_mul(2))
}

/// Report batches are sent before their outputs add up to more than this.
pub(crate) const OUTPUT_BATCH: usize = 1 << 20;

/// Frames larger than this do not keep their read buffer: it shrinks back after them.
pub(crate) const KEEP_BUFFER: usize = 64 << 10;

/// Errors decoding frames.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The announced payload is larger than the limit ([`MAX_FRAME`], or [`HELLO_MAX`] before
    /// a peer is authenticated).
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// The payload is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The connection failed or ended in the middle of a frame.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A block as sent to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireBlock {
    /// The hand-out number, unique within the connection; reports refer to it.
    pub seq: u64,
    /// daisy's block id.
    pub block_id: u64,
    /// The dense grid index.
    pub grid_index: u64,
    /// The read ROI.
    pub read_roi: Roi,
    /// The write ROI.
    pub write_roi: Roi,
}

/// The outcome of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// The block's hand-out number.
    pub seq: u64,
    /// `None` on success, else the error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind of failure (with `error`; absent means an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::observe::FailureKind>,
    /// On success, the block's output as compact JSON (tasks with outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// An executor item as sent to a worker: the registered function's name and its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireItem {
    /// The hand-out number, unique within the connection; results refer to it.
    pub seq: u64,
    /// The name the function was registered under.
    pub func: String,
    /// The item, as JSON.
    pub input: serde_json::Value,
}

/// [`ServerMsg::Items`] with borrowed items: the same frame, without copying the items
/// (the executor keeps them to retry them on another worker).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ItemsRef<'a> {
    /// See [`ServerMsg::Items`].
    Items {
        /// The items.
        items: &'a [WireItemRef<'a>],
    },
}

/// A borrowed [`WireItem`].
#[derive(Debug, Serialize)]
pub(crate) struct WireItemRef<'a> {
    pub seq: u64,
    pub func: &'a str,
    pub input: &'a serde_json::Value,
}

/// The result of one executor item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ItemOutcome {
    /// The item's hand-out number.
    pub seq: u64,
    /// The function's result as JSON, or its error text.
    pub result: Result<serde_json::Value, String>,
}

/// Worker → scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum WorkerMsg {
    /// The first message of a session.
    Hello {
        /// [`PROTOCOL_VERSION`] of the worker.
        protocol: u32,
        /// The worker's crate version (for messages).
        version: String,
        /// The run's token.
        token: String,
        /// The task the worker serves.
        task_id: String,
        /// The launch id from the context (the worker's log-file number).
        worker_id: u64,
        /// The worker's process id.
        pid: u32,
        /// The worker's host name.
        host: String,
    },
    /// Finished blocks.
    Done {
        /// One outcome per block.
        results: Vec<Outcome>,
    },
    /// Results of executor items.
    Results {
        /// One per item.
        results: Vec<ItemOutcome>,
    },
    /// The worker's per-worker set-up failed; it exits after this.
    SetupFailed {
        /// The error text.
        message: String,
    },
    /// The worker's set-up is done; it starts its first block now.
    Ready,
    /// Nothing else to say, but alive.
    Heartbeat,
    /// The worker reached its lifetime: it gives back the blocks it has not started, finishes
    /// the current one and leaves.
    Retire {
        /// Hand-out numbers of the unstarted blocks.
        unstarted: Vec<u64>,
    },
    /// The worker leaves (after `Shutdown` or retiring).
    Bye,
}

/// Scheduler → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ServerMsg {
    /// The worker is accepted.
    Welcome {
        /// The id the scheduler gave this connection (unique in the run).
        connection: u64,
    },
    /// The worker is refused (wrong token or version, unknown task).
    Refused {
        /// Why.
        reason: String,
    },
    /// Blocks to process, in order.
    Blocks {
        /// The blocks.
        blocks: Vec<WireBlock>,
    },
    /// Executor items to run, in order.
    Items {
        /// The items.
        items: Vec<WireItem>,
    },
    /// Shared read-only data for executor functions, sent to each worker once.
    Data {
        /// The name it was scattered under.
        name: String,
        /// The data, as JSON.
        value: serde_json::Value,
    },
    /// The scheduler is alive.
    Ping,
    /// No more blocks: the worker should leave.
    Shutdown,
}

/// Appends one frame holding `msg` to `out`.
#[cfg(test)]
pub(crate) fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    encode_limited(msg, out, MAX_FRAME)
}

/// [`encode`] with another limit than [`MAX_FRAME`] (at most `u32::MAX`).
pub(crate) fn encode_limited<T: Serialize>(
    msg: &T,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), FrameError> {
    let limit = limit.min(u32::MAX as usize);
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *out, msg)?;
    let len = out.len() - start - 4;
    if len > limit {
        out.truncate(start);
        return Err(FrameError::TooLarge { len, limit });
    }
    // `len <= limit <= u32::MAX` fits in a u32.
    let header = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out[start..start + 4].copy_from_slice(&header);
    Ok(())
}

/// Encodes `msg` as one frame.
pub(crate) fn to_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    to_frame_limited(msg, MAX_FRAME)
}

/// Encodes `msg` as one frame of at most `limit` bytes.
pub(crate) fn to_frame_limited<T: Serialize>(msg: &T, limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(64);
    encode_limited(msg, &mut out, limit)?;
    Ok(out)
}

/// Decodes the first frame in `buf`: `Ok(Some((msg, consumed)))`, or `Ok(None)` if `buf` does
/// not yet hold a whole frame. Never panics, whatever `buf` holds. (The connections use
/// [`read_frame`] and its async twin, which share [`frame_len`]; this form is for tests and
/// fuzzing.)
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    buf: &[u8],
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = frame_len(header, MAX_FRAME)?;
    let Some(payload) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((serde_json::from_slice(payload)?, 4 + len)))
}

/// The payload length announced by a 4-byte header, checked against `limit` ([`HELLO_MAX`],
/// [`MAX_FRAME`], or a [`session_limit`]).
pub(crate) fn frame_len(header: &[u8], limit: usize) -> Result<usize, FrameError> {
    let mut h = [0u8; 4];
    for (d, s) in h.iter_mut().zip(header) {
        *d = *s;
    }
    let len = u32::from_be_bytes(h) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len)
}

/// Prepares `buf` for a payload of `len` bytes: emptied, and shrunk if an earlier large frame
/// left it big. Its capacity is not grown here: the payload grows it as its bytes arrive, so an
/// announced length costs nothing until the peer sends that much.
pub(crate) fn reset_buffer(buf: &mut Vec<u8>) {
    buf.clear();
    if buf.capacity() > KEEP_BUFFER {
        buf.shrink_to(KEEP_BUFFER);
    }
}

/// Reads one frame from a blocking reader. `Ok(None)` on a clean end of stream before a frame.
pub(crate) fn read_frame<T: for<'de> Deserialize<'de>, R: Read>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = frame_len(&header, MAX_FRAME)?;
    reset_buffer(buf);
    let got = r.take(len as u64).read_to_end(buf)?;
    if got < len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    Ok(Some(serde_json::from_slice(buf)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_msgs() -> Vec<WorkerMsg> {
        vec![
            WorkerMsg::Hello {
                protocol: PROTOCOL_VERSION,
                version: "0.1.0".into(),
                token: "t0k".into(),
                task_id: "smooth".into(),
                worker_id: 3,
                pid: 42,
                host: "node-1".into(),
            },
            WorkerMsg::Done {
                results: vec![
                    Outcome {
                        seq: 1,
                        error: None,
                        kind: None,
                        output: Some(r#"{"edges":[[1,2]],"s":"a\"b"}"#.into()),
                    },
                    Outcome {
                        seq: 2,
                        error: Some("boom \"quoted\" \n line".into()),
                        kind: Some(crate::observe::FailureKind::Panic),
                        output: None,
                    },
                ],
            },
            WorkerMsg::Results {
                results: vec![
                    ItemOutcome {
                        seq: 3,
                        result: Ok(serde_json::json!([1, "two", {"three": 3.5}])),
                    },
                    ItemOutcome {
                        seq: 4,
                        result: Err("division by zero".into()),
                    },
                ],
            },
            WorkerMsg::SetupFailed {
                message: "no model".into(),
            },
            WorkerMsg::Heartbeat,
            WorkerMsg::Ready,
            WorkerMsg::Retire {
                unstarted: vec![7, 8],
            },
            WorkerMsg::Bye,
        ]
    }

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let mut stream = Vec::new();
        for m in sample_msgs() {
            encode(&m, &mut stream).unwrap();
        }
        let server = ServerMsg::Blocks {
            blocks: vec![WireBlock {
                seq: 9,
                block_id: 12,
                grid_index: 4,
                read_roi: Roi::new([0, 0], [10, 12]),
                write_roi: Roi::new([1, 1], [8, 10]),
            }],
        };
        let frame = to_frame(&server).unwrap();
        assert_eq!(
            decode::<ServerMsg>(&frame).unwrap(),
            Some((server, frame.len()))
        );
        // Every prefix decodes to "not yet" or to whole messages, never an error.
        let msgs = sample_msgs();
        for cut in 0..stream.len() {
            let mut at = 0;
            let mut n = 0;
            while let Some((m, used)) = decode::<WorkerMsg>(&stream[at..cut]).unwrap() {
                assert_eq!(m, msgs[n]);
                at += used;
                n += 1;
            }
        }
        // And a blocking reader sees them all, then a clean end.
        let mut r = &stream[..];
        let mut buf = Vec::new();
        for m in &msgs {
            assert_eq!(
                read_frame::<WorkerMsg, _>(&mut r, &mut buf)
                    .unwrap()
                    .as_ref(),
                Some(m)
            );
        }
        assert!(
            read_frame::<WorkerMsg, _>(&mut r, &mut buf)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_borrowed_item_encodes_as_the_owned_message() {
        let input = serde_json::json!({"x": [1, 2.5, "three"]});
        let borrowed = to_frame(&ItemsRef::Items {
            items: &[WireItemRef {
                seq: 7,
                func: "inc",
                input: &input,
            }],
        })
        .unwrap();
        let owned = ServerMsg::Items {
            items: vec![WireItem {
                seq: 7,
                func: "inc".into(),
                input: input.clone(),
            }],
        };
        assert_eq!(borrowed, to_frame(&owned).unwrap());
        assert_eq!(
            decode::<ServerMsg>(&borrowed).unwrap(),
            Some((owned, borrowed.len()))
        );
    }

    #[test]
    fn a_capped_output_fits_a_session_frame_whatever_it_escapes() {
        let cap = 100_000;
        // The worst case: every byte of the JSON escapes to two.
        let output = serde_json::to_string(&vec!["\"\\"; cap / 7]).unwrap();
        assert!(output.len() <= cap);
        let msg = WorkerMsg::Done {
            results: vec![Outcome {
                seq: 1,
                error: None,
                kind: None,
                output: Some(output.clone()),
            }],
        };
        let frame = to_frame_limited(&msg, session_limit(cap)).unwrap();
        let len = frame_len(&frame[..4], session_limit(cap)).unwrap();
        let back: WorkerMsg = serde_json::from_slice(&frame[4..4 + len]).unwrap();
        assert_eq!(back, msg);
        assert!(session_limit(usize::MAX) == usize::MAX);
    }

    #[test]
    fn oversized_frames_are_refused_before_reading_them() {
        let header = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
        let e = decode::<WorkerMsg>(&header).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { .. }), "{e}");
        let mut r = &header[..];
        let e = read_frame::<WorkerMsg, _>(&mut r, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
        let e = read_frame::<WorkerMsg, _>(&mut &[0xff, 0xff, 0xff, 0xff][..], &mut Vec::new())
            .unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { .. }));
    }

    #[test]
    fn truncated_and_malformed_frames_are_errors() {
        let frame = to_frame(&WorkerMsg::Heartbeat).unwrap();
        let mut r = &frame[..frame.len() - 1];
        let e = read_frame::<WorkerMsg, _>(&mut r, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, FrameError::Io(_)), "{e}");
        let mut r = &frame[..2];
        assert!(read_frame::<WorkerMsg, _>(&mut r, &mut Vec::new()).is_err());
        let mut bad = 5u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"{\"ty");
        bad.push(b'x');
        assert!(matches!(
            decode::<WorkerMsg>(&bad),
            Err(FrameError::Malformed(_))
        ));
        // Unknown message types and fields are refused, not ignored.
        let mut f = Vec::new();
        let body = br#"{"type":"launch_missiles"}"#;
        f.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        f.extend_from_slice(body);
        assert!(decode::<WorkerMsg>(&f).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic the decoder, and whatever it accepts re-encodes to the
        /// same message.
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Some((m, used))) = decode::<WorkerMsg>(&bytes) {
                prop_assert!(used <= bytes.len());
                let again = to_frame(&m).unwrap();
                prop_assert_eq!(decode::<WorkerMsg>(&again).unwrap().map(|x| x.0), Some(m));
            }
            let _ = decode::<ServerMsg>(&bytes);
            let mut r = &bytes[..];
            let _ = read_frame::<ServerMsg, _>(&mut r, &mut Vec::new());
        }

        /// Valid frames with bytes flipped, truncated or with a forged length never panic.
        #[test]
        fn corrupted_frames_never_panic(
            which in 0usize..8,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
            forged in any::<u32>(),
        ) {
            let mut frame = to_frame(&sample_msgs()[which]).unwrap();
            for (at, x) in flips {
                let i = at % frame.len();
                frame[i] ^= x;
            }
            let _ = decode::<WorkerMsg>(&frame[..cut % (frame.len() + 1)]);
            frame[..4].copy_from_slice(&forged.to_be_bytes());
            let _ = decode::<WorkerMsg>(&frame);
            let mut r = &frame[..];
            let _ = read_frame::<WorkerMsg, _>(&mut r, &mut Vec::new());
        }
    }
}
