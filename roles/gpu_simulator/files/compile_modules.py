"""Compile the simulator's modules to bytecode every user can read (run by the role, as root, after the copy).

The tools run as several users: the lab workload calls nvidia-smi every second as its own user. Left to
themselves, the first root process to import a changed module writes its bytecode, with that process's umask:
dcgm-exporter's is 0077, so the file came out 0600 and every other user compiled the module from source on each
call. Prints the name of each module compiled (nothing: every one was current and readable).
"""

import importlib.util
import os
import py_compile
import stat
import sys

MODE = 0o644


def current(source: str, cache: str) -> bool:
    """The bytecode exists, matches the source's mtime and size, and is mode 0644."""
    try:
        if stat.S_IMODE(os.stat(cache).st_mode) != MODE:
            return False
        with open(cache, "rb") as handle:
            header = handle.read(16)
    except OSError:
        return False
    info = os.stat(source)
    return (
        header[:4] == importlib.util.MAGIC_NUMBER
        and int.from_bytes(header[4:8], "little") == 0
        and int.from_bytes(header[8:12], "little") == int(info.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(header[12:16], "little") == info.st_size & 0xFFFFFFFF
    )


def main(directory: str) -> int:
    os.umask(0o022)
    for name in sorted(os.listdir(directory)):
        source = os.path.join(directory, name)
        if not name.endswith(".py"):
            continue
        cache = importlib.util.cache_from_source(source)
        if not current(source, cache):
            py_compile.compile(source, cfile=cache, doraise=True)
            os.chmod(cache, MODE)
            print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
