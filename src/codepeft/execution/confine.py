"""Kernel confinement for the rlimits level: what Linux gives an ordinary user without root.

The sandbox interpreter runs this file's source (`python -I -S -c SOURCE SPEC ARGV...`) in place
of the program: it confines its own process, then `execv`s the program, which inherits all of it.
It is stdlib-only on purpose: the sandbox interpreter may be the system Python (codepeft is not
importable there) and no library offers Landlock and seccomp to an unprivileged process without
native code of its own; libseccomp's bindings are not on every machine.

- `no_new_privs`: no set-uid program can give the program more rights.
- the parent-death signal: the program is killed when the codepeft process that launched it dies
  (set here, after `setpriv`, because a change of user id clears it).
- Landlock (Linux 5.13+): the program reads and executes only the paths in SPEC["read"], writes
  only under SPEC["write"]; with ABI 4+ it can neither bind nor connect TCP, with ABI 6+ it cannot
  signal processes outside its sandbox nor reach abstract Unix sockets. /proc is not readable
  except the program's own entry, so no other process's environment or command line is.
- seccomp: `socket()` of every family (UDP too, which Landlock does not cover, and Unix sockets,
  which could reach a local proxy; `socketpair` stays, for multiprocessing), io_uring (its socket
  operations bypass seccomp), ptrace, process_vm_readv/writev and the kernel keyrings fail with
  EPERM.

SPEC["require"] names what must be applied (the parent probes once what this kernel allows and
then requires it, so a run is never weaker than the probe said); a failure exits with code 125.
"""

import ctypes
import json
import os
import platform
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
EXIT_CONFINE_FAILED = 125

# Landlock access rights by ABI version (linux/landlock.h).
FS_FILE = (1 << 0) | (1 << 1) | (1 << 2)  # execute, write file, read file
FS_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
FS_ABI1 = (1 << 13) - 1  # every right of ABI 1 (bits 0-12)
NET_TCP = (1 << 0) | (1 << 1)  # bind, connect
SCOPE_ALL = (1 << 0) | (1 << 1)  # abstract unix sockets, signals

# seccomp: (audit arch, socket, [denied syscalls]) per machine.
SYSCALLS = {
    "x86_64": (0xC000003E, 41, [101, 310, 311, 425, 426, 427, 248, 249, 250]),
    "aarch64": (0xC00000B7, 198, [117, 270, 271, 425, 426, 427, 217, 218, 219]),
}
EPERM = 1


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _fail(what):
    sys.stderr.write(f"codepeft sandbox: cannot apply {what} ({os.strerror(ctypes.get_errno())})\n")
    sys.exit(EXIT_CONFINE_FAILED)


def landlock_abi(libc) -> int:
    version = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
    return max(int(version), 0)


def landlock(libc, read, write) -> bool:
    abi = landlock_abi(libc)
    if abi < 1:
        return False
    fs = FS_ABI1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    fields = [fs] + ([NET_TCP] if abi >= 4 else []) + ([SCOPE_ALL] if abi >= 6 else [])
    attr = struct.pack(f"<{len(fields)}Q", *fields)
    ruleset = libc.syscall(444, attr, len(attr), 0)
    if ruleset < 0:
        return False
    for path, rights in [(p, FS_READ) for p in read] + [(p, fs) for p in write]:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a path this machine lacks: nothing to allow
        allowed = rights if os.path.isdir(path) else rights & FS_FILE
        rule = struct.pack("<Qi", allowed, fd)  # struct landlock_path_beneath_attr (packed)
        ok = libc.syscall(445, ruleset, 1, rule, 0) == 0
        os.close(fd)
        if not ok:
            _fail(f"a Landlock rule for {path}")
    if libc.syscall(446, ruleset, 0) != 0:  # landlock_restrict_self
        _fail("Landlock")
    os.close(ruleset)
    return True


def seccomp_program(machine: str) -> bytes:
    arch, sock, denied = SYSCALLS[machine]

    def stmt(code, k):
        return (code, 0, 0, k)

    load, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    allow, errno, kill = 0x7FFF0000, 0x00050000 | EPERM, 0x80000000
    prog = [stmt(load, 4), (jeq, 1, 0, arch), stmt(ret, kill), stmt(load, 0)]
    if machine == "x86_64":  # the x32 ABI's numbers would slip past the checks below
        prog.append((0x35, 0, 1, 0x40000000))  # BPF_JGE: x32 -> the errno return
        prog.append(stmt(ret, errno))
    denied = [sock, *denied]
    for i, nr in enumerate(denied):
        prog.append((jeq, len(denied) - i, 0, nr))  # -> the final "ret errno"
    prog += [stmt(ret, allow), stmt(ret, errno)]
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog)


def seccomp(libc) -> bool:
    machine = platform.machine()
    if machine not in SYSCALLS:
        return False
    code = seccomp_program(machine)
    buf = ctypes.create_string_buffer(code, len(code))

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Fprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    return libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) == 0


def main(argv):
    spec, program = json.loads(argv[1]), argv[2:]
    libc = _libc()
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _fail("no_new_privs")
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # SIGKILL when the launching codepeft process dies
    if spec.get("parent") and os.getppid() != spec["parent"]:
        sys.exit(EXIT_CONFINE_FAILED)  # it died before the request: do not run orphaned
    read = [*spec["read"], f"/proc/{os.getpid()}"]  # its own /proc entry (it keeps the pid across exec)
    applied = {"landlock": landlock(libc, read, spec["write"]), "seccomp": seccomp(libc)}
    for name in spec.get("require", []):
        if not applied.get(name):
            _fail(name)
    if spec.get("probe"):
        print(json.dumps({**applied, "landlock_abi": landlock_abi(libc)}))
        return
    os.execv(program[0], program)


if __name__ == "__main__":
    main(sys.argv)
