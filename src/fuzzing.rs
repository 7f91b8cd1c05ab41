//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not a public API). Each
//! takes arbitrary bytes, exercises the code that reads untrusted input, and must never panic,
//! hang, or allocate more than the input justifies.

use std::net::SocketAddr;
use std::time::Duration;

use crate::fleet::context::Context;
use crate::fleet::protocol::{HELLO_MAX, MAX_FRAME, ServerMsg, WorkerMsg, decode, read_frame};
use crate::fleet::server::{Timing, check_hello, read_msg};

thread_local! {
    static RUNTIME: Option<tokio::runtime::Runtime> =
        tokio::runtime::Builder::new_current_thread().build().ok();
}

/// The frame decoder and both message types: the first byte picks the reader (the server's
/// hello and session readers, the worker's blocking reader, the slice decoder), the rest is the
/// stream. Whatever decodes must re-encode to a frame that decodes to the same message.
pub fn frames(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            // The server before authentication: the hello reader and its checks.
            let peer = SocketAddr::from(([127, 0, 0, 1], 1));
            let timing = Timing {
                ping: Duration::from_secs(1),
                silence: Duration::from_secs(30),
                hello: Duration::from_secs(10),
            };
            RUNTIME.with(|rt| {
                if let Some(rt) = rt {
                    let mut buf = Vec::new();
                    let mut r = bytes;
                    let hello = rt.block_on(read_msg(&mut r, &mut buf, HELLO_MAX));
                    assert!(buf.capacity() <= HELLO_MAX.max(bytes.len()) * 2 + 64);
                    let _ = check_hello(Ok(hello), "0123456789abcdef", peer, timing);
                }
            });
        }
        1 => {
            // The server after authentication: every frame of a session.
            RUNTIME.with(|rt| {
                if let Some(rt) = rt {
                    let mut buf = Vec::new();
                    let mut r = bytes;
                    while let Ok(Some(_)) = rt.block_on(read_msg(&mut r, &mut buf, MAX_FRAME)) {}
                }
            });
        }
        2 => {
            // The worker's blocking reader of server messages.
            let mut r = bytes;
            let mut buf = Vec::new();
            while let Ok(Some(_)) = read_frame::<ServerMsg, _>(&mut r, &mut buf) {}
        }
        _ => {
            if let Ok(Some((msg, used))) = decode::<WorkerMsg>(bytes) {
                assert!(used <= bytes.len());
                let again = crate::fleet::protocol::to_frame(&msg).ok();
                let back = again.and_then(|f| decode::<WorkerMsg>(&f).ok().flatten());
                assert_eq!(back.map(|(m, _)| m), Some(msg));
            }
            if let Ok(Some((msg, _))) = decode::<ServerMsg>(bytes) {
                let again = crate::fleet::protocol::to_frame(&msg).ok();
                let back = again.and_then(|f| decode::<ServerMsg>(&f).ok().flatten());
                assert_eq!(back.map(|(m, _)| m), Some(msg));
            }
        }
    }
}

/// The field names of a worker context, which serde's errors may name.
const CONTEXT_FIELDS: [&str; 11] = [
    "addr",
    "token",
    "tls",
    "task_id",
    "worker_id",
    "log_dir",
    "heartbeat_ms",
    "death_timeout_ms",
    "lifetime_ms",
    "prefetch",
    "max_output_bytes",
];

/// A worker's `BLOCKWISE_CONTEXT`: decoded, and what decodes round-trips; an error never
/// shows the text (it may hold the token).
pub fn worker_context(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Context::decode(text) {
        Ok(ctx) => {
            assert_eq!(Context::decode(&ctx.encode()).ok(), Some(ctx.clone()));
            let _ = (ctx.heartbeat(), ctx.death_timeout());
        }
        Err(e) => {
            let token = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_owned));
            // The token's value must not be echoed; text that repeats it elsewhere (say, in a
            // field name, which an error may name) is not a leak of it.
            if let Some(token) =
                token.filter(|t| t.len() >= 8 && text.matches(t.as_str()).count() == 1)
            {
                // serde names the context's own fields (`missing field `heartbeat_ms``): a
                // token that is part of a field name is not echoed by naming the field.
                let mut message = e.to_string();
                for field in CONTEXT_FIELDS {
                    message = message.replace(&format!("`{field}`"), "");
                }
                assert!(!message.contains(&token), "the error shows the token");
            }
        }
    }
}

/// Write-ahead-log replay: the batch of a log's bytes, and the task directories it names,
/// which must never lead out of `tasks/`.
pub fn wal(data: &[u8]) {
    if let Ok(Some(sections)) = crate::journal::wal::decode(data) {
        for s in sections {
            let id = crate::journal::task_id_of_dir_name(&s.task_dir);
            assert!(id.is_some(), "decode accepted {:?}", s.task_dir);
            assert!(!s.task_dir.contains('/') && !s.task_dir.starts_with('.'));
            if let Some(id) = id {
                assert_eq!(crate::journal::task_dir_name(&id), s.task_dir);
            }
        }
    }
}

/// `layout.json`: what parses has a SHA-256 that matches its fields.
pub fn layout(data: &[u8]) {
    if let Ok(layout) = crate::journal::layout::Layout::parse(data) {
        assert_eq!(layout.digest(), layout.sha256);
    }
}

thread_local! {
    static SCRATCH: Option<tempfile_dir::Dir> = tempfile_dir::Dir::new();
}

/// Opening a marker array: `zarr.json`, the chunk and the checksum file from the input (its
/// first two bytes give the number of blocks, the next four the lengths of the first two
/// files), written to a scratch directory and loaded as a run would.
pub fn marker_array(data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let blocks = u64::from(u16::from_le_bytes([data[0], data[1]]));
    let json_len = usize::from(u16::from_le_bytes([data[2], data[3]]));
    let chunk_len = usize::from(u16::from_le_bytes([data[4], data[5]]));
    let rest = &data[6..];
    let (json, rest) = rest.split_at(json_len.min(rest.len()));
    let (chunk, sums) = rest.split_at(chunk_len.min(rest.len()));
    SCRATCH.with(|dir| {
        let Some(dir) = dir else { return };
        let array = dir.path.join("done.zarr");
        let chunk_path = array.join("c").join("0");
        if std::fs::create_dir_all(array.join("c")).is_err()
            || std::fs::write(array.join("zarr.json"), json).is_err()
            || std::fs::write(&chunk_path, chunk).is_err()
            || std::fs::write(crate::journal::markers::sums_path(&array), sums).is_err()
        {
            return;
        }
        let grid = [i64::try_from(blocks).unwrap_or(0)];
        if let Ok(done) = crate::journal::markers::load(&array, &grid, blocks) {
            assert_eq!(done.len(), blocks);
        }
    });
}

/// A scratch directory removed at exit (no dependency on `tempfile` outside tests).
mod tempfile_dir {
    pub(super) struct Dir {
        pub(super) path: std::path::PathBuf,
    }

    impl Dir {
        pub(super) fn new() -> Option<Dir> {
            let base = if std::path::Path::new("/dev/shm").is_dir() {
                std::path::PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            };
            let path = base.join(format!("blockwise-fuzz-{}", std::process::id()));
            std::fs::create_dir_all(&path).ok()?;
            Some(Dir { path })
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
