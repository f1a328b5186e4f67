//! The StateFun HTTP transport: POST the `ToFunction` bytes, read the
//! `FromFunction` bytes of a 2xx reply, over keep-alive connections of the
//! endpoint's [`super::pool`], with TLS for `https://` endpoints ([`super::tls`]).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;

use super::pool::{ConnectError, Connection, Pool};
use super::sigv4::{AwsIdentity, Signer};
use super::turns::TypeTurns;
use super::{FunctionClient, InvokeError};
use crate::address::FunctionType;
use crate::config::{EndpointConfig, EndpointTarget};
use crate::log::BoxFuture;

pub struct HttpClient {
    pool: Pool,
    url_template: String,
    /// The largest reply body read (`payload_max_bytes`): a larger one is refused
    /// as it arrives, before it is held whole.
    reply_max_bytes: usize,
    /// Requests in flight to the endpoint, at most [`MAX_IN_FLIGHT`]: beyond that,
    /// more connections only add overhead, while queued messages wait in their
    /// mailboxes and leave in bigger batches. The pool opens no more
    /// connections than this either. The types it serves take turns.
    in_flight: TypeTurns,
    /// The endpoint's extra headers (`spec.statefun-aws.headers`), their values marked sensitive.
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    signer: Option<Signer>,
}

/// Requests in flight, and connections open, per HTTP endpoint.
pub const MAX_IN_FLIGHT: usize = 128;

/// How often one request may go again on a fresh connection after a pooled
/// one died before answering; beyond that the failure is the attempt's.
const MAX_FRESH_TRIES: u32 = 2;

type Cause<'a> = &'a (dyn std::error::Error + 'static);

/// The causes of an error, itself first. An I/O error's `source` skips the
/// error it wraps, so the walk follows its `get_ref` instead.
fn causes<'a>(error: Cause<'a>) -> impl Iterator<Item = Cause<'a>> {
    std::iter::successors(Some(error), |cause: &Cause<'_>| match cause.downcast_ref::<std::io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as Cause<'_>),
        None => cause.source(),
    })
}

fn io_kind(cause: Cause<'_>) -> Option<std::io::ErrorKind> {
    cause.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
}

/// A failed connect is an outage (refused, timed out, no route, no name: the
/// endpoint is down or being replaced), unless the TLS handshake failed (an
/// untrusted certificate, reported as invalid data): that is the attempt's failure.
fn connect_failure(url: &str, error: ConnectError) -> InvokeError {
    match error {
        ConnectError::Connect(error) => {
            let tls = causes(error.as_ref()).any(|cause| io_kind(cause) == Some(std::io::ErrorKind::InvalidData));
            let text = format!("{url}: connecting: {error:?}");
            if tls { InvokeError::Transport(text) } else { InvokeError::Unreachable(text) }
        }
        ConnectError::Handshake(error) => InvokeError::Transport(format!("{url}: connecting: {error:?}")),
    }
}

/// Whether a request failed because its connection broke before any answer
/// (reset, closed, broken pipe).
fn died_before_reply(error: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    error.is_incomplete_message()
        || error.is_canceled()
        || causes(error).any(|cause| {
            matches!(io_kind(cause), Some(ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof))
        })
}

impl HttpClient {
    /// The client of one endpoint; `identity` signs its requests if it asks for signing.
    pub fn new(endpoint: &EndpointConfig, identity: Option<&AwsIdentity>) -> Result<Self, String> {
        let EndpointTarget::Http { url_template, tls, auth } = &endpoint.target else {
            return Err("not an HTTP endpoint".into());
        };
        let signer = match &auth.signing {
            None => None,
            Some(signing) => {
                let identity = identity.ok_or(
                    "spec.statefun-aws.signing: signing needs the worker's AWS credentials, and none were found \
                     (the standard chain: environment, profile, container or instance role)",
                )?;
                let region = signing
                    .region
                    .clone()
                    .or_else(|| crate::config::function_url_region(url_template).map(str::to_owned))
                    .or_else(|| identity.region.clone())
                    .ok_or(
                        "spec.statefun-aws.signing: no region to sign for: set `region` (the URL is not a Lambda \
                         Function URL and the worker has no AWS region)",
                    )?;
                Some(Signer::new(identity, signing.service.clone(), region))
            }
        };
        let https = crate::config::is_https(url_template);
        let tls = super::tls::client_config(tls, https)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(endpoint.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let connector =
            HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(connector);
        Ok(Self {
            pool: Pool::new(connector, MAX_IN_FLIGHT, endpoint.pool_size, endpoint.pool_ttl),
            url_template: url_template.clone(),
            reply_max_bytes: endpoint.payload_max_bytes,
            in_flight: TypeTurns::new(MAX_IN_FLIGHT),
            headers: auth.headers.clone(),
            signer,
        })
    }

    /// Sends the request; one that dies on a pooled connection before any reply
    /// byte goes again at once on a fresh connection, without counting as an attempt.
    async fn send(
        &self,
        url: &str,
        body: Bytes,
    ) -> Result<(http::Response<hyper::body::Incoming>, Connection), InvokeError> {
        let uri: http::Uri = url.parse().map_err(|e| InvokeError::Transport(format!("{url}: not a URL: {e}")))?;
        let host = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let mut fresh_tries = 0;
        loop {
            let mut connection = self.pool.get(&uri).await.map_err(|e| connect_failure(url, e))?;
            let mut request = http::Request::post(path.as_str())
                .header(http::header::HOST, host.as_str())
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .body(Full::new(body.clone()))
                .map_err(|e| InvokeError::Transport(format!("{url}: {e}")))?;
            request.headers_mut().extend(self.headers.iter().cloned());
            if let Some(signer) = &self.signer {
                signer.sign(&mut request, url, &body).await?;
            }
            match connection.sender.send_request(request).await {
                Ok(response) => return Ok((response, connection)),
                Err(e) if connection.reused && fresh_tries < MAX_FRESH_TRIES && died_before_reply(&e) => {
                    fresh_tries += 1;
                    tracing::debug!(
                        url,
                        "a pooled connection died before answering ({e}); sending again on a fresh one"
                    );
                    self.pool.clear_idle();
                }
                Err(e) => return Err(InvokeError::Transport(format!("{url}: {e:?}"))),
            }
        }
    }

    async fn post(&self, url: String, body: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        let (response, connection) = self.send(&url, Bytes::from(body)).await?;
        let status = response.status();
        let limit = self.reply_max_bytes;
        let too_large = || {
            InvokeError::Malformed(format!(
                "{url}: the reply is larger than the endpoint's payload_max_bytes ({limit} bytes)"
            ))
        };
        let announced =
            response.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        let body = match Limited::new(response.into_body(), limit).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
            Err(e) => return Err(InvokeError::Transport(format!("{url}: reading the reply: {e}"))),
        };
        // Read whole: the connection can serve the next request.
        self.pool.put(connection);
        if status.is_success() {
            return Ok(Vec::from(body));
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
        if status == http::StatusCode::TOO_MANY_REQUESTS || status == http::StatusCode::SERVICE_UNAVAILABLE {
            return Err(InvokeError::Throttled(format!("HTTP {status}: {text}")));
        }
        Err(InvokeError::Status { status: status.as_u16(), body: text })
    }
}

impl FunctionClient for HttpClient {
    fn call<'a>(
        &'a self,
        function_type: &'a FunctionType,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, InvokeError>> {
        let url = self.url_template.replace("{function.name}", &function_type.name);
        Box::pin(async move {
            // The timeout runs from when the request may go out, not while it waits its turn.
            let _turn = self.in_flight.turn(function_type).await;
            match tokio::time::timeout(timeout, self.post(url, request)).await {
                Ok(result) => result,
                Err(_) => Err(InvokeError::Timeout(timeout)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::ModuleConfig;

    /// The timeout of each test call: far more than any of them takes.
    const TIMEOUT: Duration = Duration::from_secs(30);

    /// Answers every request with `reply` (raw HTTP/1.1 bytes), then closes the connection.
    async fn serve(reply: Vec<u8>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0; 64 * 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(&reply).await;
            }
        });
        addr
    }

    fn client(addr: std::net::SocketAddr) -> HttpClient {
        let text = format!(
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: ns/*\n  urlPathTemplate: http://{addr}/f\n  transport:\n    payload_max_bytes: 1000\n"
        );
        let module = ModuleConfig::parse(&text, "module.yaml").expect("module");
        HttpClient::new(&module.endpoints[0], None).expect("client")
    }

    #[tokio::test]
    async fn a_reply_over_the_payload_limit_is_refused_whether_or_not_it_announces_its_length() {
        let function_type = FunctionType::new("ns", "f");
        let body = vec![b'x'; 5000];
        let mut announced = b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n".to_vec();
        announced.extend(&body);
        let mut chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for chunk in body.chunks(700) {
            chunked.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend(chunk);
            chunked.extend(b"\r\n");
        }
        chunked.extend(b"0\r\n\r\n");
        for reply in [announced, chunked] {
            let client = client(serve(reply).await);
            let error = client.call(&function_type, b"request".to_vec(), TIMEOUT).await.expect_err("over the limit");
            assert!(matches!(error, InvokeError::Malformed(_)), "{error}");
            assert!(error.to_string().contains("larger than the endpoint's payload_max_bytes (1000 bytes)"), "{error}");
        }
        let mut small = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n".to_vec();
        small.extend(b"abc");
        let reply = client(serve(small).await)
            .call(&function_type, b"request".to_vec(), TIMEOUT)
            .await
            .expect("within the limit");
        assert_eq!(reply, b"abc");
    }

    /// A CA made for one test, the server's certificate it signed (for 127.0.0.1)
    /// and a client certificate it signed, as PEM files in `dir`.
    struct TestPki {
        dir: tempfile::TempDir,
        ca: rcgen::Certificate,
        server: (rcgen::Certificate, rcgen::KeyPair),
    }

    impl TestPki {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let ca_key = rcgen::KeyPair::generate().expect("key");
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca_params.distinguished_name.push(rcgen::DnType::CommonName, "statefun test CA");
            let ca = ca_params.self_signed(&ca_key).expect("CA");
            let issuer = rcgen::Issuer::new(ca_params, ca_key);
            let signed = |names: Vec<String>| {
                let key = rcgen::KeyPair::generate().expect("key");
                let cert =
                    rcgen::CertificateParams::new(names).expect("params").signed_by(&key, &issuer).expect("sign");
                (cert, key)
            };
            let server = signed(vec!["127.0.0.1".into()]);
            let (client, client_key) = signed(vec!["statefun-runtime".into()]);
            let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect("write");
            write("ca.pem", ca.pem());
            write("client.pem", client.pem());
            write("client.key", client_key.serialize_pem());
            write("not-pem.txt", "hello".into());
            Self { dir, ca, server }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        /// A TLS server on a local port answering every request with `ok`; with
        /// `client_auth`, it accepts only clients with a certificate of the CA.
        async fn serve(&self, client_auth: bool) -> std::net::SocketAddr {
            use tokio_rustls::rustls;
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("versions");
            let builder = if client_auth {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(self.ca.der().clone()).expect("CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .expect("verifier");
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_no_client_auth()
            };
            let (cert, key) = &self.server;
            let key = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key");
            let config = builder.with_single_cert(vec![cert.der().clone()], key).expect("server config");
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut stream) = acceptor.accept(stream).await else { return };
                        let mut request = vec![0; 64 * 1024];
                        let _ = stream.read(&mut request).await;
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                        let _ = stream.shutdown().await;
                    });
                }
            });
            addr
        }
    }

    fn https_client(url: &str, transport: &[(&str, String)]) -> Result<HttpClient, String> {
        let mut text =
            format!("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: ns/*\n  urlPathTemplate: {url}\n");
        if !transport.is_empty() {
            text.push_str("  transport:\n");
            for (key, value) in transport {
                text.push_str(&format!("    {key}: {value}\n"));
            }
        }
        let module = ModuleConfig::parse(&text, "module.yaml").expect("module");
        HttpClient::new(&module.endpoints[0], None)
    }

    #[tokio::test]
    async fn an_https_endpoint_is_trusted_through_trust_cacerts_and_refused_without_it() {
        let pki = TestPki::new();
        let addr = pki.serve(false).await;
        let function_type = FunctionType::new("ns", "f");
        // The scheme in capitals is https all the same.
        let trusted =
            https_client(&format!("HTTPS://{addr}/f"), &[("trust_cacerts", pki.path("ca.pem"))]).expect("client");
        assert_eq!(trusted.call(&function_type, b"request".to_vec(), TIMEOUT).await.expect("answered"), b"ok");
        let untrusted = https_client(&format!("https://{addr}/f"), &[]).expect("client with the system's roots");
        let error = untrusted.call(&function_type, b"request".to_vec(), TIMEOUT).await.expect_err("unknown CA");
        assert!(matches!(error, InvokeError::Transport(_)), "{error}");
        assert!(error.to_string().contains("UnknownIssuer"), "the reason is the certificate: {error}");
    }

    #[tokio::test]
    async fn mutual_tls_is_satisfied_by_client_cert_and_key_and_refused_without_them() {
        let pki = TestPki::new();
        let addr = pki.serve(true).await;
        let function_type = FunctionType::new("ns", "f");
        let url = format!("https://{addr}/f");
        let with_identity = https_client(
            &url,
            &[
                ("trust_cacerts", pki.path("ca.pem")),
                ("client_cert", pki.path("client.pem")),
                ("client_key", pki.path("client.key")),
            ],
        )
        .expect("client");
        assert_eq!(with_identity.call(&function_type, b"request".to_vec(), TIMEOUT).await.expect("answered"), b"ok");
        let anonymous = https_client(&url, &[("trust_cacerts", pki.path("ca.pem"))]).expect("client");
        let error =
            anonymous.call(&function_type, b"request".to_vec(), TIMEOUT).await.expect_err("no client certificate");
        assert!(matches!(error, InvokeError::Transport(_)), "{error}");
    }

    #[tokio::test]
    async fn an_encrypted_client_key_is_read_with_its_password_and_a_wrong_one_stops_the_start() {
        let pki = TestPki::new();
        let addr = pki.serve(true).await;
        let url = format!("https://{addr}/f");
        // Encrypted by OpenSSL, an implementation independent of this one: its default scheme, and an older PRF.
        for (name, scheme) in [
            ("aes256.key", &["-v2", "aes-256-cbc"][..]),
            ("aes128.key", &["-v2", "aes-128-cbc", "-v2prf", "hmacWithSHA1"]),
        ] {
            let output = std::process::Command::new("openssl")
                .args(["pkcs8", "-topk8", "-in", &pki.path("client.key"), "-out", &pki.path(name)])
                .args(scheme)
                .args(["-passout", "pass:correct horse"])
                .output()
                .expect("openssl (Debian's openssl package)");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            let transport = |password: &str| {
                vec![
                    ("trust_cacerts", pki.path("ca.pem")),
                    ("client_cert", pki.path("client.pem")),
                    ("client_key", pki.path(name)),
                    ("client_key_password", format!("\"{password}\"")),
                ]
            };
            let client = https_client(&url, &transport("correct horse")).expect("the key decrypts");
            let reply = client.call(&FunctionType::new("ns", "f"), b"request".to_vec(), TIMEOUT).await;
            assert_eq!(reply.as_deref().ok(), Some(&b"ok"[..]), "{name}: {reply:?}");
            let error = https_client(&url, &transport("wrong horse")).err().unwrap_or_default();
            assert!(error.contains("the password does not decrypt the key"), "{name}: {error}");
            assert!(!error.contains("horse"), "the password never shows: {error}");
        }
    }

    #[test]
    fn bad_tls_files_stop_the_start_naming_the_key_the_file_and_the_problem() {
        let pki = TestPki::new();
        let url = "https://127.0.0.1:1/f";
        let error = |transport: &[(&str, String)]| https_client(url, transport).err().unwrap_or_default();
        let missing = pki.path("missing.pem");
        let text = error(&[("trust_cacerts", missing.clone())]);
        assert!(text.starts_with(&format!("transport.trust_cacerts: {missing}: ")), "{text}");
        let not_pem = pki.path("not-pem.txt");
        let text = error(&[("trust_cacerts", not_pem.clone())]);
        assert_eq!(
            text,
            format!("transport.trust_cacerts: {not_pem}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        );
        let text = error(&[("client_cert", pki.path("client.pem")), ("client_key", not_pem.clone())]);
        assert!(
            text.starts_with(&format!("transport.client_key: {not_pem}: no unencrypted PEM private key")),
            "{text}"
        );
        let text = error(&[
            ("client_cert", pki.path("client.pem")),
            ("client_key", pki.path("client.key")),
            ("client_key_password", "secret".into()),
        ]);
        let key = pki.path("client.key");
        assert!(
            text.starts_with(&format!(
                "transport.client_key: {key}: transport.client_key_password is given, but the file holds no \
                 encrypted PKCS#8 key"
            )),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        // An http:// endpoint reads no TLS file.
        assert!(https_client("http://127.0.0.1:1/f", &[("trust_cacerts", missing)]).is_ok());
    }

    /// A server that answers the first request of each connection with `ok`
    /// and keeps it open; a later request on the same connection is read and
    /// the connection reset without an answer, as when the function's process
    /// is replaced while the runtime holds its connections. Counts connections.
    async fn serve_then_reset_kept_connections() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = vec![0; 64 * 1024];
                    let _ = stream.read(&mut request).await;
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    let _ = stream.read(&mut request).await;
                    let _ = stream.set_zero_linger();
                    drop(stream);
                });
            }
        });
        (addr, connections)
    }

    #[tokio::test]
    async fn a_request_on_a_pooled_connection_that_was_reset_goes_again_at_once_on_a_fresh_one() {
        let (addr, connections) = serve_then_reset_kept_connections().await;
        let client = client(addr);
        let function_type = FunctionType::new("ns", "f");
        for call in 0..3 {
            let reply = client.call(&function_type, b"request".to_vec(), TIMEOUT).await;
            assert_eq!(reply.as_deref().ok(), Some(&b"ok"[..]), "call {call}: {reply:?}");
        }
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 3, "one fresh connection per call");
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable_and_an_untrusted_certificate_is_not() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let error =
            client(free).call(&FunctionType::new("ns", "f"), b"request".to_vec(), TIMEOUT).await.expect_err("refused");
        assert!(matches!(error, InvokeError::Unreachable(_)), "{error}");
        let pki = TestPki::new();
        let addr = pki.serve(false).await;
        let untrusted = https_client(&format!("https://{addr}/f"), &[]).expect("client with the system's roots");
        let error =
            untrusted.call(&FunctionType::new("ns", "f"), b"request".to_vec(), TIMEOUT).await.expect_err("unknown CA");
        assert!(matches!(error, InvokeError::Transport(_)), "{error}");
    }
}
