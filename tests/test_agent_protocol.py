"""The Linux agent and the harness client, run against the host kernel in a fresh netns."""

import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.agent import AgentClient, OpError, Reply  # noqa: E402
from harness.errors import AgentError, TargetError, Unsupported  # noqa: E402
from harness import images  # noqa: E402

AGENT = ROOT / "docker" / "linux" / "agent.py"
LO = "127.0.0.1"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to give the agent its own network namespace",
)


def netns_cmd(*agent_args):
    # -I -S: no site-packages, so the agent proves it needs only the standard library.
    python = f"{sys.executable} -I -S -u {AGENT} {' '.join(agent_args)}"
    return ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {python}"]


class Agent:
    """A spawned agent, its log file, and a client."""

    def __init__(self, tmp_path, *agent_args, default_timeout=5.0):
        self.log_path = tmp_path / f"agent-{time.monotonic_ns()}.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(netns_cmd(*agent_args), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log_file, bufsize=0)
        self.default_timeout = default_timeout

    def tail(self):
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-10:])

    def client(self):
        return AgentClient.over_process(self.proc, "linux-test", self.tail,
                                        default_timeout=self.default_timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log_file.close()


@pytest.fixture
def spawn(tmp_path):
    started = []

    def _spawn(*agent_args, **kw):
        agent = Agent(tmp_path, *agent_args, **kw)
        started.append(agent)
        return agent

    yield _spawn
    for agent in started:
        agent.stop()


@pytest.fixture
def agent(spawn):
    a = spawn()
    client = a.client()
    yield client
    client.close()
    assert a.proc.wait(5) == 0, a.tail()


def pair(agent, port):
    """An established connection inside the agent: (listener, client side, server side)."""
    lsock = agent.call("listen", addr=LO, port=port)["sock"]
    c = agent.call("connect", addr=LO, port=port)
    s = agent.call("accept", sock=lsock, timeout=2)
    assert s["peer"] == [LO, c["local"][1]]
    return lsock, c["sock"], s["sock"]


def test_hello(agent):
    r = agent.hello()
    assert isinstance(r, Reply)
    assert r["stack"] == "linux"
    assert r["version"] == os.uname().release
    assert isinstance(r["pid"], int)
    assert {"hello", "listen", "accept", "connect", "send", "recv", "shutdown", "close",
            "setsockopt", "getsockopt", "state", "conns", "sysctl", "start", "wait",
            "quit"} <= set(r["ops"])
    assert abs(r.t - time.monotonic()) < 5  # same kernel clock as the host


def test_data_both_ways(agent):
    lsock, c, s = pair(agent, 5001)
    assert agent.call("send", sock=c, data=b"hello")["sent"] == 5
    assert agent.call("recv", sock=s, max=100, timeout=2)["data"] == b"hello"
    payload = bytes(range(256)) * 256
    assert agent.call("send", sock=s, data=payload)["sent"] == len(payload)
    got = b""
    while len(got) < len(payload):
        got += agent.call("recv", sock=c, timeout=2)["data"]
    assert got == payload


def test_recv_timeout_is_an_op_error(agent):
    _, c, _ = pair(agent, 5002)
    started = time.monotonic()
    with pytest.raises(OpError) as err:
        agent.call("recv", sock=c, timeout=0.2)
    assert err.value.errno == "timeout"
    assert err.value.op == "recv"
    assert 0.15 < time.monotonic() - started < 1.5


def test_eof_after_peer_close(agent):
    _, c, s = pair(agent, 5003)
    agent.call("send", sock=c, data=b"bye")
    agent.call("close", sock=c)
    assert agent.call("recv", sock=s, timeout=2)["data"] == b"bye"
    assert agent.call("recv", sock=s, timeout=2)["data"] == b""
    assert agent.call("state", sock=s)["state"] == "CLOSE-WAIT"


def test_shutdown_wr_half_close(agent):
    _, c, s = pair(agent, 5004)
    agent.call("shutdown", sock=c, how="wr")
    assert agent.call("recv", sock=s, timeout=2)["data"] == b""
    # The other direction still carries data.
    agent.call("send", sock=s, data=b"still open")
    assert agent.call("recv", sock=c, timeout=2)["data"] == b"still open"
    assert agent.call("state", sock=c)["state"] == "FIN-WAIT-2"


def test_states_and_time_wait(agent):
    lsock, c, s = pair(agent, 5005)
    assert agent.call("state", sock=lsock)["state"] == "LISTEN"
    assert agent.call("state", sock=c)["state"] == "ESTABLISHED"
    assert agent.call("state", sock=s)["state"] == "ESTABLISHED"
    conns = agent.call("conns", local_port=5005)["conns"]
    assert {"local": [LO, 5005], "remote": ["0.0.0.0", 0], "state": "LISTEN"} in conns
    assert any(x["state"] == "ESTABLISHED" for x in conns)
    # Active close from c: c ends in TIME-WAIT with no socket referring to it.
    established = agent.call("conns", remote_port=5005)["conns"]
    assert len(established) == 1 and established[0]["state"] == "ESTABLISHED"
    cport = established[0]["local"][1]
    agent.call("close", sock=c)
    assert agent.call("recv", sock=s, timeout=2)["data"] == b""
    agent.call("close", sock=s)
    deadline = time.monotonic() + 2
    while True:
        states = [x["state"] for x in agent.call("conns", local_port=cport)["conns"]]
        if states == ["TIME-WAIT"] or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert states == ["TIME-WAIT"]
    with pytest.raises(OpError) as err:
        agent.call("state", sock=c)
    assert err.value.errno == "EBADF"


def test_linger_zero_close_resets_peer(agent):
    _, c, s = pair(agent, 5006)
    agent.call("setsockopt", sock=c, opt="SO_LINGER", value=[1, 0])
    assert agent.call("getsockopt", sock=c, opt="SO_LINGER")["value"] == [1, 0]
    agent.call("close", sock=c)
    with pytest.raises(OpError) as err:
        agent.call("recv", sock=s, timeout=2)
    assert err.value.errno == "ECONNRESET"
    assert str(err.value).startswith("recv failed on target: ECONNRESET (")
    assert err.value.reply["ok"] is False


def test_sockopts(agent):
    _, c, _ = pair(agent, 5007)
    agent.call("setsockopt", sock=c, opt="TCP_NODELAY", value=1)
    assert agent.call("getsockopt", sock=c, opt="TCP_NODELAY")["value"] == 1
    agent.call("setsockopt", sock=c, opt="SO_SNDBUF", value=8192)
    assert agent.call("getsockopt", sock=c, opt="SO_SNDBUF")["value"] == 2 * 8192  # Linux doubles it
    with pytest.raises(Unsupported):
        agent.call("setsockopt", sock=c, opt="SO_BOGUS", value=1)


def test_connect_refused_and_bind_port(agent):
    with pytest.raises(OpError) as err:
        agent.call("connect", addr=LO, port=5999, timeout=2)
    assert err.value.errno == "ECONNREFUSED"
    lsock = agent.call("listen", addr=LO, port=5008, reuseaddr=True, backlog=4, rcvbuf=65536)["sock"]
    c = agent.call("connect", addr=LO, port=5008, bind_addr=LO, bind_port=40001, reuseaddr=True)
    assert c["local"] == [LO, 40001]
    assert agent.call("accept", sock=lsock)["peer"] == [LO, 40001]


def test_start_wait(agent):
    lsock = agent.call("listen", addr=LO, port=5009)["sock"]
    job = agent.start("accept", sock=lsock, timeout=5)
    started = time.monotonic()
    with pytest.raises(OpError) as err:
        job.wait(0.2)
    assert err.value.errno == "timeout"
    assert 0.15 < time.monotonic() - started < 1.5
    # The job kept running: it completes once a connection arrives.
    c = agent.call("connect", addr=LO, port=5009)
    r = job.wait(2)
    assert r["peer"] == [LO, c["local"][1]]
    assert r.t >= c.t - 0.001
    assert agent.call("state", sock=r["sock"])["state"] == "ESTABLISHED"


def test_background_call_failure_names_its_op(agent):
    lsock = agent.call("listen", addr=LO, port=5010)["sock"]
    job = agent.start("accept", sock=lsock, timeout=0.1)
    with pytest.raises(OpError) as err:
        job.wait(2)
    assert err.value.errno == "timeout"
    assert err.value.op == "accept"
    with pytest.raises(OpError) as err:
        job.wait(0)  # already collected
    assert err.value.errno == "ESRCH"


def test_sysctl(agent):
    assert agent.call("sysctl", name="net.ipv4.tcp_rfc1337")["value"] in ("0", "1")
    with pytest.raises(OpError) as err:
        agent.call("sysctl", name="net.ipv4.no_such_knob")
    assert err.value.errno == "ENOENT"
    with pytest.raises(AgentError):
        agent.call("sysctl", name="net/../../etc")


def test_unknown_op_is_unsupported(agent):
    with pytest.raises(Unsupported):
        agent.call("teleport", sock=1)
    with pytest.raises(Unsupported):
        agent.start("teleport")
    assert agent.hello()["stack"] == "linux"


def test_malformed_line_gets_ebadmsg(spawn):
    a = spawn()
    a.proc.stdin.write(b"this is not json\n{\"id\": 9, \"op\": 5}\n{\"id\": 10, \"op\": \"hello\", \"args\": []}\n")
    deadline = time.monotonic() + 5
    buf = b""
    while buf.count(b"\n") < 3 and time.monotonic() < deadline:
        if select.select([a.proc.stdout], [], [], 0.2)[0]:
            buf += os.read(a.proc.stdout.fileno(), 4096)
    replies = [json.loads(line) for line in buf.splitlines()]
    assert [(r["id"], r["ok"], r["errno"]) for r in replies] == [
        (None, False, "EBADMSG"), (9, False, "EBADMSG"), (10, False, "EBADMSG")]
    client = a.client()
    assert client.hello()["stack"] == "linux"
    with pytest.raises(AgentError) as err:
        client.call("recv", sock="three")
    assert "malformed" in str(err.value)
    with pytest.raises(AgentError, match="numeric"):
        client.call("listen", addr="localhost", port=80)  # never resolved
    assert client.hello()["stack"] == "linux"  # a harness bug does not break the channel
    client.close()
    assert a.proc.wait(5) == 0


def test_agent_killed_mid_call(spawn):
    a = spawn()
    client = a.client()
    _, c, _ = pair(client, 5011)
    threading.Timer(0.3, a.proc.kill).start()
    started = time.monotonic()
    with pytest.raises(AgentError) as err:
        client.call("recv", sock=c, timeout=5)
    assert time.monotonic() - started < 2
    first = str(err.value).splitlines()[0]
    assert "recv" in first and "linux-test" in first
    assert "agent exited (code -9)" in first
    assert "ready pid" in str(err.value)  # the log tail follows
    with pytest.raises(AgentError, match="broke earlier"):
        client.hello()


def test_hung_agent_times_out(tmp_path):
    fake = tmp_path / "fake_agent.py"
    fake.write_text("import sys\nfor line in sys.stdin:\n    print('got', line.strip(), file=sys.stderr)\n")
    log = tmp_path / "fake.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-u", str(fake)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log_file, bufsize=0)
    try:
        client = AgentClient.over_process(proc, "fake", lambda: log.read_text(), default_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(AgentError) as err:
            client.call("hello")
        elapsed = time.monotonic() - started
        assert 2.2 < elapsed < 3.5
        first = str(err.value).splitlines()[0]
        assert "fake" in first and "hello" in first and "no reply within 2.3 s" in first
        assert 'got {"id":1,"op":"hello"}' in str(err.value)
        client.close()
    finally:
        proc.kill()
        proc.wait()


def test_unix_transport(spawn, tmp_path):
    path = tmp_path / "run" / "agent.sock"
    path.parent.mkdir()
    a = spawn("--unix", str(path))
    client = AgentClient.over_unix(str(path), "linux-unix", a.tail, connect_timeout=10,
                                   exit_code=lambda wait: a.proc.poll())
    assert client.hello()["pid"] > 0
    _, c, s = pair(client, 5012)
    client.call("send", sock=c, data=b"over unix")
    assert client.call("recv", sock=s)["data"] == b"over unix"
    client.close()
    assert a.proc.wait(5) == 0
    assert not path.exists()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_unix_transport_unwritable_run_dir(tmp_path):
    run = tmp_path / "ro"
    run.mkdir()
    run.chmod(0o500)
    # Root ignores directory modes; drop CAP_DAC_OVERRIDE as the container's cap_drop does.
    cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    cmd += netns_cmd("--unix", str(run / "agent.sock"))
    with open(tmp_path / "ro.log", "wb") as log:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stderr=log, timeout=10)
    assert proc.returncode == 1
    assert "cannot serve on" in (tmp_path / "ro.log").read_text()


def test_unix_transport_agent_never_appears(tmp_path):
    with pytest.raises(TargetError, match="no agent socket"):
        AgentClient.over_unix(str(tmp_path / "nothing.sock"), "ghost", connect_timeout=0.2)


def test_stdin_eof_exits_cleanly(spawn):
    a = spawn()
    client = a.client()
    pair(client, 5013)
    a.proc.stdin.close()
    assert a.proc.wait(5) == 0
    assert "eof" in a.tail()


def test_context_digest_tracks_content(tmp_path):
    src = images.DOCKER_DIR / "linux"
    copy = tmp_path / "linux"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__"))
    base = "sha256:" + "ab" * 32
    first = images.context_digest(copy, base)
    assert len(first) == 12 and int(first, 16) >= 0
    assert images.context_digest(copy, base) == first
    assert images.context_digest(src, base) == first  # location does not matter
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "agent.cpython-311.pyc").write_bytes(b"junk")
    assert images.context_digest(copy, base) == first
    assert images.context_digest(copy, "sha256:" + "cd" * 32) != first
    agent = copy / "agent.py"
    agent.write_text(agent.read_text() + "\n# changed\n")
    changed = images.context_digest(copy, base)
    assert changed != first
    (copy / "extra.txt").write_text("x")
    assert images.context_digest(copy, base) not in (first, changed)
    assert images.target_image_tag("linux", base) == f"synfin-linux:{first}"
    assert images.base_image_tag().startswith("synfin-base:bookworm-")


def test_conns_of_one_4_tuple_is_looked_up_directly_and_agrees_with_the_listing(agent):
    lsock, c, s = pair(agent, 5006)
    cport = agent.call("conns", remote_port=5006)["conns"][0]["local"][1]

    def exact(local_port, remote_port):
        return agent.call("conns", local_port=local_port, remote_port=remote_port, local_addr=LO,
                          remote_addr=LO)["conns"]

    assert exact(5006, cport) == [{"local": [LO, 5006], "remote": [LO, cport], "state": "ESTABLISHED"}]
    assert exact(5006, cport) == agent.call("conns", local_port=5006, remote_port=cport)["conns"]
    assert exact(5006, cport + 1) == []  # no connection: an empty answer, not an error
    agent.call("close", sock=c)
    assert agent.call("recv", sock=s, timeout=2)["data"] == b""
    agent.call("close", sock=s)
    deadline = time.monotonic() + 2
    while exact(cport, 5006) != [{"local": [LO, cport], "remote": [LO, 5006], "state": "TIME-WAIT"}]:
        assert time.monotonic() < deadline, exact(cport, 5006)
        time.sleep(0.01)


def test_calls_sent_at_once_are_answered_in_order_each_with_its_own_outcome(agent):
    lsock, c, s = pair(agent, 47411)
    out = agent.call_many([("send", {"sock": c, "data": b"one"}), ("close", {"sock": 9999}),
                           ("teleport", {}), ("recv", {"sock": s, "max": 10, "timeout": 1.0}),
                           ("close", {"sock": c})])
    assert out[0]["sent"] == 3
    assert isinstance(out[1], OpError) and out[1].errno == "EBADF"
    assert isinstance(out[2], Unsupported)
    assert out[3]["data"] == b"one"
    assert isinstance(out[4], Reply)
    assert agent.hello()["stack"] == "linux"  # the channel is still in step
    assert agent.call_many([]) == []
