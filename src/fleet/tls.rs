//! Transport encryption between the scheduler and its workers: TLS 1.3 (rustls, ring) with a
//! certificate made for the run.
//!
//! The scheduler generates a self-signed certificate (rcgen, ECDSA P-256) when it starts
//! serving. Its SHA-256 fingerprint travels with the token in the worker context, so a worker
//! trusts exactly that certificate (it is *pinned*: no certificate authority, host name or
//! expiry is involved) and a peer on the network can neither read the token and the traffic
//! nor pretend to be the scheduler. The token is still checked after the handshake: TLS keeps
//! it secret on the wire, the token proves a worker belongs to the run.
//!
//! Workers use blocking sockets: [`TlsStream`] splits one rustls client connection into a
//! reading and a writing half that two threads use at once (the worker's main thread reads,
//! its heartbeat thread writes). Socket reads happen outside the connection's lock; decrypting,
//! encrypting and socket writes happen under it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::{Error, WorkerErrorKind};

/// The name in the run's certificate and the one workers ask for (pinning makes it a label).
const NAME: &str = "blockwise-scheduler";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::worker(WorkerErrorKind::Tls, format!("TLS: {what}: {e}"))
}

/// The hex SHA-256 of a certificate's DER bytes.
pub(crate) fn fingerprint(cert: &[u8]) -> String {
    Sha256::digest(cert)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The scheduler's side: a fresh certificate and the server configuration using it.
pub(crate) struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    /// The certificate's fingerprint, for the worker context.
    pub(crate) fingerprint: String,
}

impl ServerTls {
    /// Generates the run's certificate and key.
    pub(crate) fn generate() -> Result<ServerTls, Error> {
        let key = rcgen::generate_simple_self_signed(vec![NAME.to_owned()])
            .map_err(|e| tls_err("generating the run's certificate", e))?;
        let cert = CertificateDer::from(key.cert.der().to_vec());
        let fingerprint = fingerprint(&cert);
        let secret =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("configuring the server", e))?
            .with_no_client_auth()
            .with_single_cert(vec![cert], secret)
            .map_err(|e| tls_err("configuring the server's certificate", e))?;
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint,
        })
    }
}

/// Accepts exactly the certificate whose SHA-256 is `pin`.
#[derive(Debug)]
struct Pinned {
    pin: Vec<u8>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Sha256::digest(end_entity.as_ref());
        let same = got.len() == self.pin.len()
            && got
                .iter()
                .zip(&self.pin)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the scheduler's certificate does not match the fingerprint in the worker context"
                    .into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered.
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// A worker's TLS session over a connected socket, after the handshake. A certificate that
/// does not match `pin` is an error of kind `InvalidData`; a connection that breaks is an error
/// of its own kind.
pub(crate) fn connect(socket: &TcpStream, pin: &str) -> io::Result<TlsStream> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
    };
    let pin = decode_hex(pin).ok_or_else(|| {
        bad(
            "the worker context's certificate fingerprint",
            &format!("{} characters, not 64 hex digits", pin.len()),
        )
    })?;
    let provider = provider();
    let verifier = Pinned {
        pin,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad("configuring the client", &e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let name = ServerName::try_from(NAME).map_err(|e| bad("the server name", &e))?;
    let mut conn = ClientConnection::new(Arc::new(config), name)
        .map_err(|e| bad("starting the handshake", &e))?;
    let mut sock = socket;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    let read = socket.try_clone()?;
    let write = socket.try_clone()?;
    let shared = Arc::new(Mutex::new(conn));
    Ok(TlsStream {
        reader: TlsReader {
            conn: Arc::clone(&shared),
            socket: read,
            write: write.try_clone()?,
            pending: vec![0; 16 << 10],
            start: 0,
            end: 0,
        },
        writer: TlsWriter {
            conn: shared,
            socket: write,
        },
    })
}

/// Both halves of a worker's TLS session.
pub(crate) struct TlsStream {
    pub(crate) reader: TlsReader,
    pub(crate) writer: TlsWriter,
}

fn lock(conn: &Mutex<ClientConnection>) -> MutexGuard<'_, ClientConnection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends whatever the connection has to send (under its lock, so writes never interleave).
fn send_pending(conn: &mut ClientConnection, mut socket: &TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(&mut socket)?;
    }
    Ok(())
}

/// The reading half: decrypted bytes from the scheduler.
pub(crate) struct TlsReader {
    conn: Arc<Mutex<ClientConnection>>,
    socket: TcpStream,
    write: TcpStream,
    /// Received TLS bytes not yet given to the connection: `pending[start..end]`.
    pending: Vec<u8>,
    start: usize,
    end: usize,
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut conn = lock(&self.conn);
                match conn.reader().read(buf) {
                    // 0 after the scheduler's close_notify: a clean end.
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.start < self.end {
                    let mut slice = &self.pending[self.start..self.end];
                    let n = conn.read_tls(&mut slice)?;
                    self.start += n;
                    conn.process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    send_pending(&mut conn, &self.write)?;
                    continue;
                }
            }
            // Wait for more bytes without holding the lock (the heartbeat thread writes).
            let n = self.socket.read(&mut self.pending)?;
            if n == 0 {
                return Ok(0);
            }
            self.start = 0;
            self.end = n;
        }
    }
}

/// The writing half: encrypts and sends.
pub(crate) struct TlsWriter {
    conn: Arc<Mutex<ClientConnection>>,
    socket: TcpStream,
}

impl TlsWriter {
    /// Sends close_notify and shuts the socket down for writing.
    pub(crate) fn shutdown(&mut self) {
        let mut conn = lock(&self.conn);
        conn.send_close_notify();
        let _ = send_pending(&mut conn, &self.socket);
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
    }
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut conn = lock(&self.conn);
        let n = conn.writer().write(buf)?;
        send_pending(&mut conn, &self.socket)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut conn = lock(&self.conn);
        conn.writer().flush()?;
        send_pending(&mut conn, &self.socket)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_hex_sha256_and_decode() {
        let f = fingerprint(b"abc");
        assert_eq!(
            f,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(decode_hex(&f).unwrap(), Sha256::digest(b"abc").to_vec());
        assert!(decode_hex("zz").is_none());
        assert!(decode_hex(&"g".repeat(64)).is_none());
    }

    #[test]
    fn certificates_are_fresh_per_run() {
        let a = ServerTls::generate().unwrap();
        let b = ServerTls::generate().unwrap();
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 64);
    }
}
