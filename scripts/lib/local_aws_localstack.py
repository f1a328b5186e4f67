"""Starts LocalStack like `python -m localstack.runtime.main`, for scripts/local-aws.sh.

Two differences, each for a LocalStack 4.7.0 limit no setting lifts:

- Its default gateway server (twisted) ignores the host of GATEWAY_LISTEN and
  listens on all interfaces (with hypercorn, the other one, S3 PutObject failed
  here); here every IPv4 twisted listener that names no interface listens on
  $LOCAL_AWS_LISTEN_HOST.
- S3 keeps the files of its object store in a hard-coded
  /tmp/localstack-s3-storage (shared by every LocalStack on the machine); here
  they go to $LOCAL_AWS_S3_DIR.
"""

import os
import runpy

from twisted.internet import endpoints

from localstack.services.s3 import provider

LISTEN_HOST = os.environ["LOCAL_AWS_LISTEN_HOST"]


class _HostTCP4ServerEndpoint(endpoints.TCP4ServerEndpoint):
    def __init__(self, reactor, port, backlog=50, interface=""):
        super().__init__(reactor, port, backlog, interface or LISTEN_HOST)


endpoints.TCP4ServerEndpoint = _HostTCP4ServerEndpoint
provider.DEFAULT_S3_TMP_DIR = os.environ["LOCAL_AWS_S3_DIR"]

runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
