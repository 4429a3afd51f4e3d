"""The test suite's port reservation (`tests.conftest.free_port`): two processes asking at
once never get the same port, and a port stays reserved while its process lives."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.conftest import PORTS, free_port
from tests.helpers import REPO_ROOT

_TAKE = """
import sys
from tests.conftest import free_port
print(" ".join(str(free_port()) for _ in range(100)), flush=True)
sys.stdin.read()  # hold the reservations until the test lets go
"""


def test_two_processes_never_share_a_port_and_ports_avoid_the_ephemeral_range():
    procs = [
        subprocess.Popen([sys.executable, "-c", _TAKE], cwd=REPO_ROOT, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(2)
    ]  # fmt: skip
    try:
        taken = [set(map(int, proc.stdout.readline().split())) for proc in procs]
        mine = {free_port() for _ in range(30)}
    finally:
        for proc in procs:
            proc.communicate("", timeout=30)
    assert len(taken[0]) == len(taken[1]) == 100 and len(mine) == 30
    assert not (taken[0] & taken[1]) and not (mine & (taken[0] | taken[1]))
    assert all(port in PORTS for port in taken[0] | taken[1] | mine)
    with socket.socket() as sock:  # a reserved port is free to bind for its owner's server
        sock.bind(("127.0.0.1", next(iter(mine))))
