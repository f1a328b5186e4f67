"""Readiness checks and warm-ups for scripts/local-aws.sh.

Runs with the LocalStack venv's python (it has boto3). Every command retries
its check until it passes or --timeout expires, and gives up at once when the
--pid process has exited (the service died while starting) or when a line
matching --fail-pattern appears in --log after the command began. Exit status 0
means ready; otherwise the reason is printed on stderr.

    local_aws_check.py localstack URL        LocalStack's health shows s3 and kinesis available
    local_aws_check.py dynamodb URL          a DynamoDB ListTables answers
    local_aws_check.py http URL              any HTTP answer at all (even 404)
    local_aws_check.py kinesis-warmup URL    creates, waits for and deletes a throwaway stream
    local_aws_check.py lambda-invoke URL FN  invokes FN with an API Gateway proxy event; the
                                             answer must be a proxy response (statusCode)
"""

import argparse
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request

REGION = "us-east-1"
READY_STATES = ("available", "running")


class NotReady(Exception):
    """Not yet: try again."""


class GiveUp(Exception):
    """No point in trying again."""


class Watch:
    """Gives up when the service's process exits or its log shows a failure."""

    def __init__(self, args):
        self.pid = args.pid
        self.log = args.log
        self.pattern = re.compile(args.fail_pattern) if args.fail_pattern else None
        self.offset = os.path.getsize(self.log) if self.log and os.path.exists(self.log) else 0

    def check(self):
        if self.pid and not alive(self.pid):
            raise GiveUp(f"the process ({self.pid}) exited")
        if self.log and self.pattern:
            with open(self.log, "rb") as log:
                log.seek(self.offset)
                for line in log.read().decode(errors="replace").splitlines():
                    if self.pattern.search(line):
                        raise GiveUp(f"the log says: {line.strip()}")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def client(service, url, read_timeout=30):
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=read_timeout),
    )


def check_localstack(args, watch):
    with urllib.request.urlopen(f"{args.url}/_localstack/health", timeout=5) as response:
        services = json.load(response).get("services", {})
    states = {name: services.get(name) for name in ("s3", "kinesis")}
    if any(state not in READY_STATES for state in states.values()):
        raise NotReady(f"services not ready yet: {states}")


def check_dynamodb(args, watch):
    client("dynamodb", args.url, read_timeout=5).list_tables()


def check_http(args, watch):
    try:
        urllib.request.urlopen(args.url, timeout=5).close()
    except urllib.error.HTTPError:
        pass  # an HTTP error status is still an answer


def kinesis_warmup(args, watch):
    # The first Kinesis call makes LocalStack install (npm) and start its
    # Kinesis engine, which may take a while.
    kinesis = client("kinesis", args.url, read_timeout=args.timeout)
    name = f"local-aws-warmup-{os.getpid()}"
    try:
        kinesis.create_stream(StreamName=name, ShardCount=1)
    except kinesis.exceptions.ResourceInUseException:
        pass
    deadline = time.monotonic() + 60
    while True:
        status = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
        if status == "ACTIVE":
            break
        if time.monotonic() >= deadline:
            raise NotReady(f"stream {name} still {status} after 60s")
        time.sleep(0.2)
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


def invoke(args, outcome):
    event = {
        "httpMethod": "POST",
        "path": "/",
        "headers": {"content-type": "application/octet-stream"},
        "body": "",
        "isBase64Encoded": True,
    }
    request = urllib.request.Request(
        f"{args.url}/2015-03-31/functions/{args.function}/invocations",
        data=json.dumps(event).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            outcome["answer"] = (response.status, response.read())
    except urllib.error.HTTPError as error:
        # cargo lambda watch answers a function *error* with HTTP 500.
        outcome["error"] = NotReady(f"HTTP {error.code}: {error.read()[:500]!r}")
    except Exception as error:
        outcome["error"] = error


def lambda_invoke(args, watch):
    # The first invoke waits for the function to compile; meanwhile the log
    # may show that it failed to (cargo lambda then never answers).
    outcome = {}
    request = threading.Thread(target=invoke, args=(args, outcome), daemon=True)
    request.start()
    deadline = time.monotonic() + args.timeout
    while request.is_alive():
        request.join(0.5)
        watch.check()
        if time.monotonic() >= deadline:
            raise GiveUp(f"no answer within {args.timeout:.0f}s")
    if "error" in outcome:
        raise outcome["error"]
    status, body = outcome["answer"]
    try:
        answer = json.loads(body)
    except ValueError as error:
        raise NotReady(f"HTTP {status}, not JSON: {body[:500]!r}") from error
    if not isinstance(answer, dict) or "statusCode" not in answer:
        raise NotReady(f"HTTP {status}, not a proxy response: {body[:500]!r}")
    print(f"local-aws: {args.function} answered a proxy response (statusCode {answer['statusCode']})")


def report(reason, last):
    print(f"{reason}; last error: {last}" if last else f"{reason}", file=sys.stderr)


def wait(check, args):
    watch = Watch(args)
    deadline = time.monotonic() + args.timeout
    last = None
    while True:
        try:
            check(args, watch)
            return 0
        except GiveUp as error:
            report(error, last)
            return 1
        except Exception as error:  # anything else means "not yet"
            last = f"{type(error).__name__}: {error}"
        try:
            watch.check()
        except GiveUp as error:
            report(error, last)
            return 1
        if time.monotonic() >= deadline:
            report(f"not ready after {args.timeout:.0f}s", last)
            return 1
        time.sleep(args.interval)


def main():
    checks = {
        "localstack": check_localstack,
        "dynamodb": check_dynamodb,
        "http": check_http,
        "kinesis-warmup": kinesis_warmup,
        "lambda-invoke": lambda_invoke,
    }
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=checks)
    parser.add_argument("url")
    parser.add_argument("function", nargs="?")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--pid", type=int, help="give up when this process has exited")
    parser.add_argument("--log", help="the service's log, for --fail-pattern")
    parser.add_argument("--fail-pattern", help="give up when a new line of --log matches this regex")
    args = parser.parse_args()
    args.url = args.url.rstrip("/")
    if args.command == "lambda-invoke" and not args.function:
        parser.error("lambda-invoke needs a function name")
    return wait(checks[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
