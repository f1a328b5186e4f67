//! Function endpoints as they are deployed: behind HTTPS, with an API key and
//! AWS SigV4 signing (as a Lambda Function URL with auth type `AWS_IAM` asks).
//!
//! - The runtime's SigV4 signature of a fixed request, at a fixed time, with
//!   fixed credentials, is the one botocore (AWS's own Python signer) computes.
//! - The shopping cart runs end to end in local mode with its carts (Rust SDK)
//!   behind an HTTPS endpoint that lets a request through only with the API
//!   key and a signature botocore finds good (tests/python/sigv4.py), and its
//!   inventory written with the official StateFun Python SDK, served over TLS.
//!   Both endpoints' certificates come from a CA made for the test, trusted
//!   through `trust_cacerts`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use statefun_runtime::invoke::sigv4::{Credentials, signature_headers};
use statefun_tests::python::{PythonServer, python_env};
use statefun_tests::{Deployment, FunctionServer, Runtime, cart, dead_letters_json, send_lines, wait_until};

const TIMEOUT: Duration = Duration::from_secs(180);
const ACCESS_KEY: &str = "AKIDSTATEFUNTEST";
const SECRET_KEY: &str = "statefun/test/secret/key+with/odd=characters";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEJr//////////session+token/for/the+test==";
const REGION: &str = "eu-west-1";
const API_KEY: &str = "shop-api-key-0123456789";

/// Runs `tests/python/sigv4.py sign` on `spec`: the headers botocore's signature adds.
fn botocore_signature(python: &Path, spec: &Value) -> Value {
    let mut child = Command::new(python)
        .arg(statefun_tests::aws::repo_root().join("tests/python/sigv4.py"))
        .arg("sign")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sigv4.py");
    child.stdin.take().expect("stdin").write_all(spec.to_string().as_bytes()).expect("write the request");
    let output = child.wait_with_output().expect("sigv4.py");
    assert!(output.status.success(), "sigv4.py sign failed:\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("sigv4.py printed JSON")
}

#[test]
fn the_runtimes_sigv4_signature_is_the_one_botocore_computes() {
    let python = python_env();
    // 2026-01-02T03:04:05Z.
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045);
    let url = "https://abc123.lambda-url.eu-west-1.on.aws/shoppingcart/cart";
    let headers = [
        ("host", "abc123.lambda-url.eu-west-1.on.aws"),
        ("content-type", "application/octet-stream"),
        ("x-api-key", "  spaced   value "),
    ];
    let body = b"\x0a\x10a ToFunction body\xff\x00";
    for token in [Some(SESSION_TOKEN), None] {
        let credentials = Credentials::new(ACCESS_KEY, SECRET_KEY, token.map(str::to_owned), None, "test");
        let ours = signature_headers(&credentials, REGION, "lambda", time, url, &headers, body).expect("signs");
        let ours: serde_json::Map<String, Value> = ours.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        let spec = json!({
            "url": url,
            "headers": headers.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "body_hex": body.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "time": "20260102T030405Z",
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "token": token,
            "region": REGION,
            "service": "lambda",
        });
        let theirs = botocore_signature(&python, &spec);
        assert_eq!(Value::Object(ours), theirs, "session token {token:?}");
    }
}

/// The local mode with the worker's AWS credentials (and the API key) in its environment.
struct SignedLocal {
    data: PathBuf,
}

impl Deployment for SignedLocal {
    fn envs(&self) -> Vec<(String, String)> {
        let mut envs = self.data.envs();
        for (name, value) in [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_SESSION_TOKEN", SESSION_TOKEN),
            ("AWS_REGION", REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("SHOP_API_KEY", API_KEY),
        ] {
            envs.push((name.into(), value.into()));
        }
        envs
    }

    fn scratch(&self) -> PathBuf {
        self.data.scratch()
    }
}

/// A CA made for the test and a certificate it signed for 127.0.0.1, as PEM files.
fn make_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "statefun https test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("sign");
    let paths = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, cert.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

/// The shopping cart's module.yaml with its endpoint replaced by `endpoints`.
fn module_with(dir: &Path, endpoints: &str) -> PathBuf {
    let template = include_str!("../../functions/examples/shopping-cart/module.yaml");
    let (_, rest) = template.split_once("\n---\n").expect("the example's first document is its endpoint");
    let path = dir.join("module.yaml");
    std::fs::write(&path, format!("{endpoints}\n---\n{rest}")).expect("write module.yaml");
    path
}

#[test]
fn the_shopping_cart_runs_through_signed_https_endpoints_and_a_python_inventory_behind_tls() {
    let python = python_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = make_pki(dir.path());
    let (ca, cert, key) = (ca.to_string_lossy(), cert.to_string_lossy(), key.to_string_lossy());

    let carts = FunctionServer::start(shopping_cart::functions());
    let upstream = format!("http://{}/statefun", carts.addr);
    let credentials = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_SESSION_TOKEN", SESSION_TOKEN),
    ];
    let checker = PythonServer::start_with_env(
        &python,
        "sigv4.py",
        &["proxy", &upstream, &cert, &key, REGION, "lambda", API_KEY],
        &credentials,
        dir.path(),
    );
    let descriptors = dir.path().join("descriptors.binpb");
    std::fs::write(&descriptors, statefun_proto::FILE_DESCRIPTOR_SET).expect("write descriptors");
    let inventory = PythonServer::start_with_env(
        &python,
        "inventory.py",
        &[&descriptors.to_string_lossy(), "0"],
        &[("TLS_CERT", &cert), ("TLS_KEY", &key)],
        dir.path(),
    );

    // A request without a signature is refused: the checker is not a pass-through.
    let unsigned = Command::new(&python)
        .arg("-c")
        .arg(
            "import ssl, sys, urllib.request, urllib.error\n\
             context = ssl.create_default_context(cafile=sys.argv[1])\n\
             request = urllib.request.Request(sys.argv[2], data=b'x', headers={'x-api-key': sys.argv[3]})\n\
             try:\n    urllib.request.urlopen(request, context=context)\n    print(200)\n\
             except urllib.error.HTTPError as e:\n    print(e.code)\n",
        )
        .args([&*ca, &format!("https://127.0.0.1:{}/statefun", checker.port), API_KEY])
        .output()
        .expect("python");
    assert_eq!(String::from_utf8_lossy(&unsigned.stdout).trim(), "403", "{unsigned:?}");

    let endpoints = format!(
        "kind: io.statefun.endpoints.v2/http
spec:
  functions: shoppingcart/*
  urlPathTemplate: https://127.0.0.1:{checker}/statefun
  transport:
    call: 30s
    trust_cacerts: {ca}
  statefun-aws:
    headers:
      x-api-key: {{ env: SHOP_API_KEY }}
    signing:
      type: aws-sigv4
---
kind: io.statefun.endpoints.v2/http
spec:
  functions: shoppingcart/inventory
  urlPathTemplate: HTTPS://127.0.0.1:{inventory}/
  transport:
    call: 30s
    trust_cacerts: {ca}",
        checker = checker.port,
        inventory = inventory.port,
    );
    let module = module_with(dir.path(), &endpoints);
    let deployment = SignedLocal { data: dir.path().join("data") };
    let workload = cart::workload(20, 300, 17);
    let mut runtime = Runtime::start(&deployment, &module, &[]);
    let diagnostics = |runtime: &Runtime| {
        format!(
            "\n--- runtime log ---\n{}\n--- sigv4.py ---\n{}\n--- inventory.py ---\n{}",
            runtime.log_text(),
            checker.stderr_text(),
            inventory.stderr_text()
        )
    };
    send_lines(&deployment, &module, "restock", &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || {
        workload.restocks_applied(&deployment) == workload.restocks.len() || !dead_letters_json(&deployment).is_empty()
    });
    send_lines(&deployment, &module, "add-to-cart", &workload.order_records(&workload.orders));
    wait_until(TIMEOUT, "a result for every order, or a dead letter", || {
        workload.results(&deployment).len() >= workload.orders.len() || !dead_letters_json(&deployment).is_empty()
    });
    let dead_letters = dead_letters_json(&deployment);
    assert!(dead_letters.is_empty(), "nothing is dead-lettered: {dead_letters:?}{}", diagnostics(&runtime));
    assert!(runtime.terminate().success(), "{}", diagnostics(&runtime));
    let report = cart::check(&deployment, &workload);
    assert_eq!(report.redelivered, 0, "exactly one result per order");
    let refused = checker.stderr_text().matches("refused").count();
    assert_eq!(refused, 1, "only the unsigned probe was refused, every call of the runtime was signed well");
    eprintln!("{} orders through the signed HTTPS endpoint and the Python inventory over TLS", workload.orders.len());
}
