"""Languages the sandbox runs: how to lay out, compile, run and read the errors of a program.

Adding a language is one subclass of `Language` registered in LANGUAGES.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

from codepeft.execution.limits import Limits
from codepeft.execution.sandbox import sandbox_python
from codepeft.execution.toolchains import link_tree, prepared, run_build, tool_version

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
            with warnings.catch_warnings():  # the program's own warnings (invalid escapes) are not ours
                warnings.simplefilter("ignore")
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


# Runs a compiled test binary with its report on stderr, then prints the end marker read from
# stdin only when every test passed (the marker stays in the shell, out of the program's reach).
TEST_BINARY_RUNNER = 'read -r end; "$0" "$@" 1>&2 && printf "%s\\n" "$end"'


class Go(Language):
    """A `package main` test file run with `go test` (the HumanEvalPack Go layout), against
    Debian's testify in GOPATH mode (/usr/share/gocode). Its compiled packages are prepared once
    in a build cache that each program gets a copy of, so a program compiles in under a second."""

    name = "go"
    GOPATH = "/usr/share/gocode"
    needs = (
        ("go", "apt-get install golang-go"),
        (f"{GOPATH}/src/github.com/stretchr/testify/assert", "apt-get install golang-github-stretchr-testify-dev"),
    )
    # the Go runtime and toolchain reserve address space and run many threads
    limits = replace(Limits(), memory_mb=None, processes=256, cpu_seconds=20.0, wall_seconds=30.0)

    @classmethod
    def _build(cls, into: Path) -> None:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(into),
            "GO111MODULE": "off",
            "GOPATH": cls.GOPATH,
            "GOCACHE": str(into / "gocache"),
        }
        run_build([_tool("go"), "build", "github.com/stretchr/testify/assert"], into, env, "Go's testify")

    def write(self, source, workdir, guard):
        (workdir / "main_test.go").write_text(source)
        cache = workdir / ".gocache"  # the program's own copy: go writes its build into it
        shutil.copytree(prepared(f"go-testify-{tool_version(_tool('go'), 'version')}", self._build) / "gocache", cache)
        for path in [cache, *cache.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)

    def compile_argv(self):
        env = f"GO111MODULE=off GOFLAGS= GOPATH={self.GOPATH} GOCACHE=$PWD/.gocache GOTMPDIR=$PWD"
        return ["/bin/sh", "-c", f"{env} exec {_tool('go')} test -c -vet=off -o main.test main_test.go"]

    def run_argv(self):
        return ["/bin/sh", "-c", TEST_BINARY_RUNNER, "./main.test", "-test.count=1"]

    def error_type(self, stderr):
        panic = re.search(r"^panic: (runtime error|[\w.]+)?", stderr, re.M)
        if panic:
            return f"Panic({panic.group(1)})" if panic.group(1) else "Panic"
        if "--- FAIL" in stderr:
            return "AssertionError"
        return None


class Rust(Language):
    """A file whose tests are a `#[cfg(test)]` module (the HumanEvalPack Rust layout), built with
    `rustc --test` against the rand, regex and md5 crates Debian packages, compiled once by cargo
    offline. Debian's rustc and cargo, so the crates and the compiler match."""

    name = "rust"
    RUSTC, CARGO, REGISTRY = "/usr/bin/rustc", "/usr/bin/cargo", "/usr/share/cargo/registry"
    CRATES = {"rand": "0.8", "regex": "1", "md5": "0.7"}
    needs = (
        (RUSTC, "apt-get install rustc"),
        (CARGO, "apt-get install cargo"),
    )
    limits = replace(Limits(), memory_mb=None, processes=256, cpu_seconds=20.0, wall_seconds=30.0)

    def missing(self):
        absent = [
            f"librust-{crate}-dev" for crate in self.CRATES if not list(Path(self.REGISTRY).glob(f"{crate}-[0-9]*"))
        ]
        if absent:
            tools = super().missing()
            return (
                f"{tools}; " if tools else "rust programs need "
            ) + f"the crates of {' '.join(absent)} (apt-get install {' '.join(absent)})"
        return super().missing()

    @classmethod
    def _build(cls, into: Path) -> None:
        project = into / "project"
        (project / "src").mkdir(parents=True)
        (project / "src" / "lib.rs").write_text("")
        deps = "\n".join(f'{crate} = "{version}"' for crate, version in cls.CRATES.items())
        (project / "Cargo.toml").write_text(
            f'[package]\nname = "codepeft-tests"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n{deps}\n'
        )
        (project / ".cargo").mkdir()
        (project / ".cargo" / "config.toml").write_text(
            f'[source.crates-io]\nreplace-with = "debian"\n\n[source.debian]\ndirectory = "{cls.REGISTRY}"\n'
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(into),
            "CARGO_HOME": str(into / "cargo-home"),
            "RUSTC": cls.RUSTC,
            "CARGO_PROFILE_DEV_DEBUG": "0",
        }
        out = run_build([cls.CARGO, "build", "--offline", "--message-format=json"], project, env, "Rust's crates")
        (into / "deps").mkdir()
        externs = []
        for line in out.splitlines():
            message = json.loads(line)
            if message.get("reason") != "compiler-artifact":
                continue
            for rlib in (Path(f) for f in message["filenames"] if f.endswith(".rlib")):
                if rlib.parent.name == "deps":
                    shutil.copy2(rlib, into / "deps" / rlib.name)
                    if message["target"]["name"] in cls.CRATES:
                        externs.append(f"{message['target']['name']}=deps/{rlib.name}")
        (into / "externs.txt").write_text("\n".join(externs) + "\n")
        shutil.rmtree(project)
        shutil.rmtree(into / "cargo-home", ignore_errors=True)

    def crates(self) -> Path:
        return prepared(f"rust-crates-{tool_version(self.RUSTC, '--version')}", self._build)

    def write(self, source, workdir, guard):
        (workdir / "main.rs").write_text(source)
        link_tree(self.crates() / "deps", workdir / "deps")

    def compile_argv(self):
        externs = (self.crates() / "externs.txt").read_text().split()
        return [
            self.RUSTC,
            "--edition",
            "2021",
            "--test",
            "-C",
            "debuginfo=0",
            "-C",
            "strip=debuginfo",  # the test binary stays under the file size limit
            "-C",
            f"linker={_tool('cc')}",  # by its real path: /etc/alternatives is not in the sandbox
            "-A",
            "warnings",
            "-L",
            "dependency=deps",
            *(a for e in externs for a in ("--extern", e)),
            "-o",
            "main",
            "main.rs",
        ]

    def run_argv(self):
        return ["/bin/sh", "-c", TEST_BINARY_RUNNER, "./main", "--test-threads=1", "-q"]

    def error_type(self, stderr):
        if "panicked at" not in stderr:
            return None
        return "AssertionError" if re.search(r"assertion.*failed|assertion failed", stderr) else "Panic"


LANGUAGES: dict[str, Language] = {lang.name: lang for lang in (Python(), Java(), JavaScript(), Cpp(), Go(), Rust())}
