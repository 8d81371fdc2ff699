# A hostile control-socket client for tests/integration/abuse.test.ts, run as an unprivileged
# member of the socket's group. One mode per attack of issue 11; prints one JSON summary.
#
#   attacker.py SOCKET slowloris CONNS BYTES   send BYTES of one never-ending line, 1 byte per send
#   attacker.py SOCKET mute CONNS REQUESTS     hello + REQUESTS `list` each, never read; hold HOLD_S
#   attacker.py SOCKET subscribe CONNS         hello + `events` each, never read; hold HOLD_S
#   attacker.py SOCKET idle CONNS              hello each, then nothing; hold HOLD_S
#   attacker.py SOCKET flood CONNS SECONDS     pipeline 64 `stats` at a time and read the answers
#   attacker.py SOCKET wide CONNS OUTPUTS      one `add` of OUTPUTS invalid outputs each (every other
#                                              connection says hello first); read nothing for
#                                              HOLD_S, then the answer to the `add`
#   attacker.py SOCKET ask 1 JSON...           hello, then each request; prints every answer line
# HOLD_S (environment, default 12) is how long held connections stay open.
import json, os, re, select, socket, sys, time

path, mode, conns = sys.argv[1], sys.argv[2], int(sys.argv[3])
arg = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4].isdigit() else 0
HOLD_S = float(os.environ.get("HOLD_S", "12"))
# The protocol version, from the one place that defines it (src/version.ts).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../src/version.ts")) as _f:
    V = int(re.search(r"PROTOCOL_VERSION = (\d+)", _f.read()).group(1))
HELLO = b'{"v":%d,"id":0,"cmd":"hello","args":{"client":"attacker"}}\n' % V


def connect_all(n):
    """n connections; a connect the kernel refuses (accept queue full) is retried for up to 5 s."""
    out, failed = [], 0
    for _ in range(n):
        deadline = time.time() + 5
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            try:
                s.connect(path)
                out.append(s)
                break
            except OSError:
                s.close()
                if time.time() > deadline:
                    failed += 1
                    break
                time.sleep(0.01)
    return out, failed


def peek_first_line(s):
    """The first line the daemon wrote, without waiting ('' when none)."""
    try:
        data = s.recv(4096, socket.MSG_DONTWAIT | socket.MSG_PEEK)
        return data.split(b"\n")[0].decode(errors="replace")
    except OSError:
        return ""


def is_closed(s):
    """The daemon closed this connection (EOF after what it wrote, or a failed send)."""
    try:
        s.setblocking(False)
        s.send(b"\n")
    except OSError:
        return True
    return False


def classify(socks):
    refused = sum(1 for s in socks if '"busy"' in peek_first_line(s))
    closed = sum(1 for s in socks if is_closed(s))
    return refused, closed


summary = {"mode": mode, "connections": conns}
if mode == "slowloris":
    socks, failed = connect_all(conns)
    for s in socks:
        s.sendall(HELLO)
        s.setblocking(False)
    open_ = list(socks)
    line = b'{"v":%d,"id":1,"cmd":"ping","pad":"' % V + b"x" * arg
    sent = 0
    for i in range(len(line)):
        if not open_:
            break
        for s in list(open_):
            try:
                s.send(line[i : i + 1])
                sent += 1
            except BlockingIOError:
                pass
            except OSError:
                open_.remove(s)
    time.sleep(0.5)
    answers = []
    for s in socks:
        try:
            s.setblocking(True)
            s.settimeout(1)
            data = s.recv(1 << 16)
            answers.append(data.decode(errors="replace"))
        except OSError:
            answers.append("")
    summary.update(failed=failed, bytes_sent=sent, cut_off=sum(1 for a in answers if '"too_large"' in a))
elif mode in ("mute", "subscribe", "idle"):
    socks, failed = connect_all(conns)
    for s in socks:
        s.setblocking(False)
        try:
            if mode == "mute":
                s.send(HELLO + (b'{"v":%d,"id":1,"cmd":"list"}\n' % V) * arg)
            elif mode == "subscribe":
                s.send(HELLO + (b'{"v":%d,"id":1,"cmd":"events"}\n' % V))
            else:
                s.send(HELLO)
        except OSError:
            pass
    print(json.dumps({"connected": len(socks), "failed": failed}), flush=True)
    time.sleep(HOLD_S)
    refused, closed = classify(socks)
    summary.update(connected=len(socks), failed=failed, refused=refused, closed=closed)
elif mode == "flood":
    socks, failed = connect_all(conns)
    for s in socks:
        s.sendall(HELLO)
        s.settimeout(10)
        buf = b""
        while b"\n" not in buf:
            buf += s.recv(4096)
    batch = (b'{"v":%d,"id":2,"cmd":"stats"}\n' % V) * 64
    answers = 0
    pending = {s: 0 for s in socks}
    bufs = {s: b"" for s in socks}
    deadline = time.time() + arg
    while time.time() < deadline:
        for s in socks:
            if pending[s] == 0:
                s.sendall(batch)
                pending[s] = 64
        ready, _, _ = select.select(socks, [], [], 0.5)
        for s in ready:
            data = s.recv(1 << 20)
            if not data:
                raise SystemExit("daemon closed a flooding connection")
            bufs[s] += data
            n = bufs[s].count(b"\n")
            bufs[s] = bufs[s][bufs[s].rfind(b"\n") + 1 :]
            pending[s] -= n
            answers += n
    summary.update(failed=failed, answers=answers)
elif mode == "wide":
    # A line just under 64 KiB whose every output is invalid: one problem per output, if the
    # daemon looks at them (it should not: the sender may not add, or has not said hello).
    line = b'{"v":%d,"id":1,"cmd":"add","args":{"rule":{"name":"a","from":"x","to":[' % V + b",".join([b"0"] * arg) + b"]}}}\n"
    socks, failed = connect_all(conns)
    for i, s in enumerate(socks):
        s.sendall((HELLO if i % 2 else b"") + line)
    time.sleep(HOLD_S)
    sizes, codes = [], set()
    for i, s in enumerate(socks):
        s.settimeout(5)
        buf, want = b"", 2 if i % 2 else 1
        while buf.count(b"\n") < want:
            try:
                data = s.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
        answer = buf.split(b"\n")[want - 1] if buf.count(b"\n") >= want else buf
        sizes.append(len(answer))
        try:
            codes.add(json.loads(answer)["error"]["code"])
        except (ValueError, KeyError, TypeError):
            codes.add("(no answer)")
    summary.update(failed=failed, line_bytes=len(line), answer_bytes_max=max(sizes), codes=sorted(codes))
elif mode == "ask":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(path)
    except OSError as e:
        summary.update(connect_error=e.errno)
        print(json.dumps(summary), flush=True)
        sys.exit(0)
    requests = [HELLO] + [r.encode() + b"\n" for r in sys.argv[4:]]
    answers, buf = [], b""
    for r in requests:
        try:
            s.sendall(r)
        except OSError:
            pass  # closed by the daemon: still read what it wrote before
        while b"\n" not in buf:
            try:
                data = s.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
        if b"\n" not in buf:
            break
        line, buf = buf.split(b"\n", 1)
        answers.append(json.loads(line))
    summary.update(answers=answers)
print(json.dumps(summary), flush=True)
