"""AWS SigV4 with botocore, AWS's own Python signer, for the tests of the
runtime's signed HTTP endpoints.

  python sigv4.py sign < request.json
      Signs one POST the way botocore does at a fixed time; prints the headers
      the signature adds, as JSON. The input: url, headers (name -> value),
      body_hex, time (YYYYmmddTHHMMSSZ), access_key, secret_key, token (or
      null), region, service.

  python sigv4.py proxy UPSTREAM CERT KEY REGION SERVICE API_KEY
      Serves HTTPS on a free local port with CERT/KEY (PEM files). Each POST
      must carry `x-api-key: API_KEY` and a SigV4 signature, made within the
      last five minutes with the credentials of the environment
      (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), that
      botocore computes the same; such requests go on to UPSTREAM (an http://
      URL) and its answer comes back, anything else gets 403 with the reason.
      Prints "listening on https://127.0.0.1:<port>" once it accepts requests.
"""

import datetime
import json
import os
import sys
import types
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from serve import Handler, use_tls

TIME_FORMAT = "%Y%m%dT%H%M%SZ"
OCTETS = "application/octet-stream"


def sign_at(when, url, headers, body, credentials, region, service):
    """The headers botocore's SigV4Auth sets on the request, signing at `when`."""

    class Fixed(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return when

    real = botocore.auth.datetime
    botocore.auth.datetime = types.SimpleNamespace(datetime=Fixed)
    try:
        request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
        botocore.auth.SigV4Auth(credentials, service, region).add_auth(request)
    finally:
        botocore.auth.datetime = real
    wanted = ("authorization", "x-amz-date", "x-amz-security-token")
    return {name.lower(): value for name, value in request.headers.items() if name.lower() in wanted}


def sign(spec):
    when = datetime.datetime.strptime(spec["time"], TIME_FORMAT)
    credentials = Credentials(spec["access_key"], spec["secret_key"], spec.get("token"))
    body = bytes.fromhex(spec["body_hex"])
    return sign_at(when, spec["url"], spec["headers"], body, credentials, spec["region"], spec["service"])


def refusal(headers, url, body, credentials, region, service, api_key):
    """Why the request is refused, or None when its key and signature are good."""
    if headers.get("x-api-key") != api_key:
        return "wrong or missing x-api-key"
    authorization = headers.get("authorization", "")
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        return "not signed with SigV4"
    fields = dict(part.strip().split("=", 1) for part in authorization[len("AWS4-HMAC-SHA256 "):].split(","))
    try:
        when = datetime.datetime.strptime(headers.get("x-amz-date", ""), TIME_FORMAT)
    except ValueError:
        return "no valid x-amz-date"
    if abs((datetime.datetime.utcnow() - when).total_seconds()) > 300:
        return "signed more than five minutes away from now"
    signed = fields.get("SignedHeaders", "").split(";")
    resign = {
        name: headers[name]
        for name in signed
        if name in headers and name not in ("authorization", "x-amz-date", "x-amz-security-token")
    }
    expected = sign_at(when, url, resign, body, credentials, region, service)
    if expected.get("authorization") != authorization:
        return f"signature mismatch: botocore computes {expected.get('authorization')!r}"
    return None


def proxy(upstream, cert, key, region, service, api_key):
    credentials = Credentials(
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], os.environ.get("AWS_SESSION_TOKEN")
    )

    class Endpoint(Handler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            url = f"https://{headers.get('host', '')}{self.path}"
            reason = refusal(headers, url, body, credentials, region, service, api_key)
            if reason is not None:
                sys.stderr.write(f"refused {self.path}: {reason}\n")
                sys.stderr.flush()
                self.answer(403, "text/plain; charset=utf-8", reason.encode("utf-8"))
                return
            forwarded = urllib.request.Request(
                upstream, data=body, method="POST", headers={"Content-Type": "application/octet-stream"}
            )
            try:
                with urllib.request.urlopen(forwarded, timeout=30) as response:
                    self.answer(response.status, OCTETS, response.read())
            except urllib.error.HTTPError as e:
                self.answer(e.code, OCTETS, e.read())
            except OSError as e:
                self.answer(502, "text/plain; charset=utf-8", f"upstream: {e}".encode("utf-8"))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    server.daemon_threads = True
    use_tls(server, cert, key)
    print(f"listening on https://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["sign"]:
        print(json.dumps(sign(json.load(sys.stdin))))
    elif sys.argv[1:2] == ["proxy"] and len(sys.argv) == 8:
        proxy(*sys.argv[2:])
    else:
        sys.exit(__doc__)
