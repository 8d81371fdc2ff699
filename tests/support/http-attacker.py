# A hostile client of the daemon's HTTP listener (`run --metrics`) for
# tests/integration/metrics-abuse.test.ts. One mode per attack; runs for SECONDS, then prints one
# JSON summary. Every loop is bounded by SECONDS and CONNS.
#
#   http-attacker.py HOST PORT hold CONNS SECONDS     open CONNS connections, send nothing, hold them
#   http-attacker.py HOST PORT trickle CONNS SECONDS  CONNS connections, one byte of a never-ending
#                                                     header on each every 2 s
#   http-attacker.py HOST PORT scrape CONNS SECONDS   CONNS threads, each GET /metrics in a tight loop
#
# "closed" counts connections the server ended (EOF or reset); "status" counts the status codes
# of whatever answers arrived (a 503 for a connection beyond the server's cap, for example).
import json, resource, select, socket, sys, threading, time

host, port, mode, conns, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
end = time.time() + seconds
# 2,000 connections need more than the usual 1,024 descriptors.
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect((host, port))
        s.setblocking(False)
        return s
    except OSError:
        s.close()
        return None


def status_of(data):
    """The status code of an HTTP answer's first line, or None."""
    parts = data.split(b"\r\n", 1)[0].split(b" ")
    return parts[1].decode() if len(parts) > 1 and parts[0].startswith(b"HTTP/") else None


class Held:
    """Open connections, watched for the server's answer and its close."""

    def __init__(self):
        self.socks, self.first, self.opened, self.lifetimes, self.status = [], {}, {}, [], {}

    def add(self, s):
        self.socks.append(s)
        self.opened[s] = time.time()
        self.first[s] = b""

    def poll(self, timeout):
        if not self.socks:
            time.sleep(timeout)
            return
        # poll, not select: select cannot watch a descriptor above 1,023.
        p, by_fd = select.poll(), {}
        for s in self.socks:
            p.register(s, select.POLLIN)
            by_fd[s.fileno()] = s
        for fd, _ in p.poll(timeout * 1000):
            s = by_fd[fd]
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if data:
                if len(self.first[s]) < 64:
                    self.first[s] += data[:64]
                continue
            self.drop(s)

    def drop(self, s):
        code = status_of(self.first[s]) or "none"
        self.status[code] = self.status.get(code, 0) + 1
        self.lifetimes.append(time.time() - self.opened[s])
        self.socks.remove(s)
        s.close()

    def summary(self):
        lt = sorted(self.lifetimes)
        return {"closed": len(lt), "still_open": len(self.socks), "status": self.status,
                "lifetime_max_s": round(lt[-1], 2) if lt else None}


summary = {"mode": mode, "connections": conns}
if mode in ("hold", "trickle"):
    held, failed = Held(), 0
    for _ in range(conns):
        if time.time() > end:
            break
        s = connect()
        if s is None:
            failed += 1
        else:
            held.add(s)
        if len(held.socks) % 100 == 0:
            held.poll(0)
    summary["connected"], summary["failed"] = len(held.socks) + len(held.lifetimes), failed
    line = b"GET /metrics HTTP/1.1\r\nX-Trickle: " + b"a" * 100000
    sent = 0
    next_byte = time.time()
    while time.time() < end:
        if mode == "trickle" and time.time() >= next_byte:
            for s in list(held.socks):
                try:
                    s.send(line[sent:sent + 1])
                except OSError:
                    held.drop(s)
            sent += 1
            next_byte += 2
        held.poll(min(0.2, max(0, end - time.time())))
    summary["bytes_sent_each"] = sent
    summary.update(held.summary())
    for s in held.socks:
        s.close()
elif mode == "scrape":
    counts, lock = {"requests": 0, "status": {}, "refused": 0}, threading.Lock()
    request = ("GET /metrics HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (host, port)).encode()

    def loop():
        while time.time() < end:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(2)
            data = b""
            try:
                s.connect((host, port))
                s.sendall(request)
                while True:  # the whole page, as a scraper reads it
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    if len(data) < 64:
                        data += chunk[:64]
            except OSError:
                pass
            finally:
                s.close()
            code = status_of(data)
            with lock:
                counts["requests"] += 1
                if code is None:
                    counts["refused"] += 1
                else:
                    counts["status"][code] = counts["status"].get(code, 0) + 1

    threads = [threading.Thread(target=loop) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary.update(counts)
else:
    sys.exit("mode must be hold, trickle or scrape")
print(json.dumps(summary), flush=True)
