# Runs a command (a daemon) whose SO_LOCK_FILTER can be switched off from outside, for the
# tests that need a worker to meet a packet socket without a locked filter at run time: what
# the supervisor never hands over, and the one thing a ready worker reports with `fatal`
# (zig/worker.zig: the confinement check of a ring added at run time).
#
#   unlocked-filter.py SWITCH -- COMMAND...
#
# COMMAND (exec'd in this process, so its pid is this one's) and everything it starts run
# under a seccomp filter that passes setsockopt(fd, SOL_SOCKET, SO_LOCK_FILTER, ...) to a
# handler process (SECCOMP_RET_USER_NOTIF). While the file SWITCH exists, the handler answers
# "done" without running the call: the socket stays unlocked and its owner is none the wiser.
# Otherwise the call runs as it would have (SECCOMP_USER_NOTIF_FLAG_CONTINUE). No other call is
# touched. Root only (a filter with a listener needs CAP_SYS_ADMIN or no_new_privs; the daemon
# must keep the ability to change user, so no_new_privs is not an option). The handler ends
# when no process uses the filter any more. Every faked call is told on stderr.
import ctypes, os, platform, select, socket, struct, sys

if len(sys.argv) < 4 or sys.argv[2] != "--":
    sys.exit("usage: unlocked-filter.py SWITCH -- COMMAND...")
switch, command = sys.argv[1], sys.argv[3:]

ARCH = {
    # AUDIT_ARCH_*, __NR_setsockopt, __NR_seccomp
    "x86_64": (0xC000003E, 54, 317),
    "aarch64": (0xC00000B7, 208, 277),
}
if platform.machine() not in ARCH:
    sys.exit(f"unlocked-filter.py: unknown architecture {platform.machine()}")
audit_arch, nr_setsockopt, nr_seccomp = ARCH[platform.machine()]
SOL_SOCKET, SO_LOCK_FILTER = 1, 44

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
# _IOWR('!', 0, struct seccomp_notif) (80 bytes), _IOWR('!', 1, struct seccomp_notif_resp) (24).
NOTIF_RECV = (3 << 30) | (80 << 16) | (ord("!") << 8) | 0
NOTIF_SEND = (3 << 30) | (24 << 16) | (ord("!") << 8) | 1

BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
# struct seccomp_data: nr (0), arch (4), instruction_pointer (8), args[6] (16, 8 bytes each).
program = [
    (BPF_LD_W_ABS, 0, 0, 4),
    (BPF_JEQ_K, 0, 6, audit_arch),
    (BPF_LD_W_ABS, 0, 0, 0),
    (BPF_JEQ_K, 0, 4, nr_setsockopt),
    (BPF_LD_W_ABS, 0, 0, 16 + 8 * 1),  # level (low 32 bits, little endian)
    (BPF_JEQ_K, 0, 2, SOL_SOCKET),
    (BPF_LD_W_ABS, 0, 0, 16 + 8 * 2),  # optname
    (BPF_JEQ_K, 1, 0, SO_LOCK_FILTER),
    (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    (BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF),
]
insns = b"".join(struct.pack("HBBI", *i) for i in program)

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


def handle(listener):
    """Answers every notification until no process uses the filter (the listener hangs up)."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    notif = ctypes.create_string_buffer(80)
    while True:
        events = poller.poll()
        if any(ev & (select.POLLHUP | select.POLLERR) for _, ev in events) and not any(ev & select.POLLIN for _, ev in events):
            return
        ctypes.memset(notif, 0, 80)
        if libc.ioctl(listener, NOTIF_RECV, notif) != 0:
            continue  # ENOENT: the caller died (or was interrupted) before we took it
        nid, pid = struct.unpack_from("QI", notif, 0)
        fake = os.path.exists(switch)
        resp = ctypes.create_string_buffer(struct.pack("QqiI", nid, 0, 0, 0 if fake else SECCOMP_USER_NOTIF_FLAG_CONTINUE), 24)
        if fake:
            fd = struct.unpack_from("Q", notif, 16 + 16)[0]
            print(f"unlocked-filter: SO_LOCK_FILTER of fd {fd} in pid {pid} not set", file=sys.stderr, flush=True)
        libc.ioctl(listener, NOTIF_SEND, resp)  # ENOENT: the caller is gone meanwhile


ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
if os.fork() == 0:
    # The handler: forked before the filter exists, so its own calls are not filtered.
    ours.close()
    _, fds, _, _ = socket.recv_fds(theirs, 1, 1)
    theirs.close()
    handle(fds[0])
    os._exit(0)

theirs.close()
# struct sock_fprog: the program's length and address (its buffer kept referenced meanwhile).
buf = ctypes.create_string_buffer(insns, len(insns))
fprog = ctypes.create_string_buffer(struct.pack("HxxxxxxQ", len(program), ctypes.addressof(buf)), 16)
listener = libc.syscall(nr_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, fprog)
if listener < 0:
    sys.exit(f"unlocked-filter.py: seccomp: {os.strerror(ctypes.get_errno())}")
socket.send_fds(ours, [b"l"], [listener])
os.close(listener)
ours.close()
os.execvp(command[0], command)
