"""Languages the sandbox runs: how to lay out, compile, run and read the errors of a program.

Adding a language is one subclass of `Language` registered in LANGUAGES.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

from codepeft.execution.limits import Limits
from codepeft.execution.sandbox import sandbox_python

# Removes what lets a Python program reach outside its process; used only in the rlimits
# fallback (bubblewrap's namespaces make it unnecessary there).
PYTHON_GUARD = """\
import builtins as _b, io as _io, os as _os, shutil as _sh, subprocess as _sp
_root = _os.path.realpath(_os.getcwd()) + _os.sep
_real_open, _real_os_open = _io.open, _os.open
def _inside(path):
    return _os.path.realpath(path).startswith(_root)
def _open(file, mode="r", *args, **kwargs):
    if not isinstance(file, int) and any(c in mode for c in "wax+") and not _inside(file):
        raise PermissionError(f"sandbox: writing outside the working directory: {file}")
    return _real_open(file, mode, *args, **kwargs)
def _os_open(path, flags, *args, **kwargs):
    if flags & (_os.O_WRONLY | _os.O_RDWR | _os.O_CREAT) and not _inside(path):
        raise PermissionError(f"sandbox: writing outside the working directory: {path}")
    return _real_os_open(path, flags, *args, **kwargs)
_b.open = _io.open = _open
_os.open = _os_open
for _n in ("kill", "killpg", "system", "fork", "forkpty", "putenv", "remove", "removedirs", "rmdir", "unlink",
           "setuid", "setsid", "execv", "execve", "execvp", "spawnv", "popen", "rename", "renames", "truncate",
           "chmod", "chown", "chdir", "fchdir"):
    setattr(_os, _n, None)
_sh.rmtree = _sh.move = _sh.chown = None
_sp.Popen = None
import sys as _sys
for _m in ("ipdb", "joblib", "resource", "psutil", "tkinter", "ctypes", "socket"):
    _sys.modules[_m] = None
"""


# Runs main.py, then prints the end marker it read from stdin (stdin is closed first, so the
# marker is in no file, argument or environment the program can read).
PYTHON_BOOT = """\
import os, runpy, sys
def _codepeft_run(end=sys.stdin.readline().strip(), write=os.write):
    sys.stdin.close()
    sys.stdin = open(os.devnull)
    runpy.run_path("main.py", run_name="__main__")
    sys.stdout.flush()
    write(1, (end + "\\n").encode())
_codepeft_run()
"""


class Language:
    """How to lay out, compile and run a program. The runner must print the end marker, read
    as one line from stdin, only after the tests finished."""

    name: str
    limits = Limits()

    def write(self, source: str, workdir: Path, guard: bool) -> None:
        raise NotImplementedError

    def compile_argv(self) -> list[str] | None:
        return None

    def run_argv(self) -> list[str]:
        raise NotImplementedError

    def ro_binds(self) -> list[str]:
        return []

    # (what is missing, how to get it): programs, then files (headers, libraries)
    needs: tuple[tuple[str, str], ...] = ()

    def missing(self) -> str | None:
        """What this machine lacks to build and run programs in this language (None: nothing),
        so a task says so instead of scoring every program 0."""
        absent = [(what, how) for what, how in self.needs if not (shutil.which(what) or Path(what).exists())]
        if not absent:
            return None
        return f"{self.name} programs need {', '.join(w for w, _ in absent)} ({'; '.join(h for _, h in absent)})"

    def syntax_error(self, source: str) -> str | None:
        """A compile error found without running anything (None when fine or unknown)."""
        return None

    def error_type(self, stderr: str) -> str | None:
        raise NotImplementedError

    def is_assertion(self, error_type: str | None) -> bool:
        return error_type is not None and error_type.endswith("AssertionError")


class Python(Language):
    name = "python"

    def write(self, source, workdir, guard):
        (workdir / "main.py").write_text((PYTHON_GUARD if guard else "") + source)

    def run_argv(self):
        return [sandbox_python(), "-I", "-B", "-c", PYTHON_BOOT]

    def ro_binds(self):
        py = Path(sandbox_python())
        return [str(py.parent.parent)] if not str(py).startswith("/usr/") else []

    def syntax_error(self, source):
        try:
            compile(source, "main.py", "exec")
        except (SyntaxError, ValueError) as err:
            return f"{type(err).__name__}: {err}"
        return None

    _LAST = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))\b", re.M)

    def error_type(self, stderr):
        found = self._LAST.findall(stderr)
        return found[-1] if found else None


class Java(Language):
    """A program whose public class `Main` has the tests in `main` (the HumanEvalPack Java layout)."""

    name = "java"
    needs = (("javac", "apt-get install default-jdk-headless"), ("java", "apt-get install default-jdk-headless"))
    # The JVM reserves its address space up front and runs ~20 threads: limit the heap instead.
    limits = replace(Limits(), memory_mb=None, processes=256, cpu_seconds=20.0, wall_seconds=30.0)

    def write(self, source, workdir, guard):
        (workdir / "Main.java").write_text(source)
        (workdir / "CodepeftRunner.java").write_text(
            "public class CodepeftRunner {\n"
            "    public static void main(String[] args) throws Throwable {\n"
            "        String end = new java.io.BufferedReader(new java.io.InputStreamReader(System.in)).readLine();\n"
            "        System.setIn(new java.io.ByteArrayInputStream(new byte[0]));\n"
            "        Main.main(args);\n"
            "        System.out.println(end);\n"
            "        System.out.flush();\n"
            "    }\n"
            "}\n"
        )

    _JVM = ["-J-Xmx512m", "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1"]

    def compile_argv(self):
        return [_tool("javac"), *self._JVM, "-nowarn", "-d", ".", "Main.java", "CodepeftRunner.java"]

    def run_argv(self):
        jvm = [flag.removeprefix("-J") for flag in self._JVM]
        return [_tool("java"), *jvm, "-cp", ".", "CodepeftRunner"]

    def ro_binds(self):
        return [p for p in ("/etc/java-17-openjdk", "/etc/java-21-openjdk", "/etc/alternatives") if Path(p).exists()]

    _EXC = re.compile(r"Exception in thread \"main\" ([\w.$]+)|^Caused by: ([\w.$]+)", re.M)

    def error_type(self, stderr):
        found = [a or b for a, b in self._EXC.findall(stderr)]
        if not found:
            return None
        # Main.main ran inside our runner: report the first cause, not the wrapper.
        return found[0].rsplit(".", 1)[-1]


def _tool(name: str) -> str:
    """A toolchain binary by its real path (bubblewrap binds real paths, not symlinks)."""
    found = shutil.which(name)
    return str(Path(found).resolve()) if found else name


class JavaScript(Language):
    """A Node.js program whose tests run at the top level (the HumanEvalPack JavaScript layout).

    `console.assert` only prints in Node, so the runner makes it throw: a failed check is then an
    AssertionError and a non-zero exit, not a line on stderr that a pass would hide."""

    name = "javascript"
    needs = (("node", "apt-get install nodejs"),)
    # V8 reserves its address space up front: limit the heap instead.
    limits = replace(Limits(), memory_mb=None, processes=64)
    RUNNER = (
        "const fs = require('fs');\n"
        "const { AssertionError } = require('assert');\n"
        "const end = fs.readFileSync(0, 'utf8').split('\\n')[0];\n"
        "console.assert = (ok, ...what) => {\n"
        "  if (!ok) throw new AssertionError({ message: ['Assertion failed', ...what].join(' ') });\n"
        "};\n"
        "require('./main.js');\n"
        "fs.writeSync(1, end + '\\n');\n"
    )

    # HumanEvalPack's md5 problem requires the npm package `js-md5`; Node's own crypto gives the
    # same function (md5 of a string as hex), so the sandbox needs no package download.
    JS_MD5 = "module.exports = (text) => require('crypto').createHash('md5').update(text).digest('hex');\n"

    def write(self, source, workdir, guard):
        (workdir / "main.js").write_text(source)
        (workdir / "runner.js").write_text(self.RUNNER)
        (workdir / "node_modules" / "js-md5").mkdir(parents=True)
        (workdir / "node_modules" / "js-md5" / "index.js").write_text(self.JS_MD5)

    def run_argv(self):
        return [_tool("node"), "--max-old-space-size=512", "--stack-size=4000", "runner.js"]

    def ro_binds(self):
        # Node reads OpenSSL's configuration at start and stops when it may not (a missing file is fine)
        return [p for p in ("/etc/ssl/openssl.cnf",) if Path(p).exists()]

    _EXC = re.compile(r"^(?:Uncaught )?([A-Z]\w*(?:Error|Exception))\b", re.M)

    def error_type(self, stderr):
        found = self._EXC.findall(stderr)
        return found[0] if found else None


class Cpp(Language):
    """A C++17 program whose tests are its `main` (the HumanEvalPack C++ layout). The runner
    renames that `main` and calls it, printing the end marker only when it returns."""

    name = "cpp"
    needs = (
        ("g++", "apt-get install g++"),
        ("/usr/include/boost/any.hpp", "apt-get install libboost-dev"),
        ("/usr/include/openssl/md5.h", "apt-get install libssl-dev"),
    )
    limits = replace(Limits(), cpu_seconds=20.0, wall_seconds=30.0)
    RUNNER = (
        "\n#undef main\n#include <iostream>\n#include <string>\n"
        "int main() {\n"
        "    std::string end;\n"
        "    std::getline(std::cin, end);\n"
        "    codepeft_tests_main();\n"
        "    std::cout << std::flush;\n"
        '    std::printf("%s\\n", end.c_str());\n'
        "    return 0;\n"
        "}\n"
    )

    def write(self, source, workdir, guard):
        (workdir / "main.cpp").write_text(self.wrap(source))

    @classmethod
    def wrap(cls, source: str) -> str:
        """The tests' `main` becomes `codepeft_tests_main` (the last `int main(` of the source)."""
        head, found, tail = source.rpartition("int main(")
        if not found:
            return source  # no tests to run: it fails to link, as it should
        # the tests' main may end without `return` (allowed for main only): not checked when renamed
        return f'{head}__attribute__((no_sanitize("undefined"))) int codepeft_tests_main({tail}{cls.RUNNER}'

    def compile_argv(self):
        # A function that runs off its end without returning a value traps (instead of handing
        # back whatever a register held, which passes a test now and then); the md5 problem
        # links OpenSSL's libcrypto (libssl-dev).
        return [
            _tool("g++"),
            "-std=c++17",
            "-O0",
            "-w",
            "-fsanitize=return",
            "-fsanitize-undefined-trap-on-error",
            "-o",
            "main",
            "main.cpp",
            "-lcrypto",
        ]

    def run_argv(self):
        return ["./main"]

    def error_type(self, stderr):
        if "Assertion" in stderr and "failed" in stderr:
            return "AssertionError"
        found = re.search(r"terminate called after throwing an instance of '([\w:]+)'", stderr)
        return found.group(1).rsplit(":", 1)[-1] if found else None


LANGUAGES: dict[str, Language] = {lang.name: lang for lang in (Python(), Java(), JavaScript(), Cpp())}
