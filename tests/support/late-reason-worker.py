#!/usr/bin/env python3
# A stand-in for the worker executable (zig/worker.zig) that refuses to run, with the one
# ordering the real worker leaves to chance made certain: its reason (a `fatal` reply on fd 3,
# the channel) reaches the supervisor only after the supervisor reaped its exit. The real
# worker writes `fatal`, then exits 1; a supervisor that took the exit for the whole story
# told "exited during start-up" instead of the reason (tests/unit/worker-start-race.test.ts).
#
# The process the supervisor started exits 1 at once; a child it forked keeps fd 3, waits until
# that process is reaped (gone from /proc), then writes the reply and exits.
# MCRELAY_TEST_FATAL: the message (default "stand-in worker refuses to run"), given by the test
# as a test hook of the worker handle (WorkerOptions.testHooks), never from its own environment.
import json, os, socket, time

message = os.environ.get("MCRELAY_TEST_FATAL", "stand-in worker refuses to run")
started = os.getpid()
if os.fork() == 0:
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{started}") and time.monotonic() < deadline:
        time.sleep(0.002)
    channel = socket.socket(fileno=3)
    # What the supervisor sent (set-up and ring messages) is read first: a Unix socket closed
    # with unread data makes the peer's next read fail (ECONNRESET) instead of seeing the end.
    channel.setblocking(False)
    try:
        while True:
            socket.recv_fds(channel, 65536, 600)
    except BlockingIOError:
        pass
    channel.setblocking(True)
    channel.send(('{"type":"fatal","message":%s}\n' % json.dumps(message)).encode())
    channel.close()
    os._exit(0)
os._exit(1)
