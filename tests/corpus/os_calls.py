# File-system calls through CPython's os module, each printing its result or
# its errno: tests/tests/cpython_os.rs runs it under ssirun and wasmtime.
import os, stat, errno, io, sys, time
def t(name, f):
    try:
        r = f()
        print(name, "ok", r)
    except OSError as e:
        print(name, "err", errno.errorcode.get(e.errno, e.errno))
    except Exception as e:
        print(name, "exc", type(e).__name__, e)
os.chdir("/w")
t("mkdir", lambda: os.mkdir("d"))
t("mkdir again", lambda: os.mkdir("d"))
t("makedirs", lambda: os.makedirs("d/e/f"))
t("write", lambda: open("d/a.txt", "w").write("hello\n"))
t("append", lambda: open("d/a.txt", "a").write("more\n"))
t("read", lambda: open("d/a.txt").read())
t("r+ write", lambda: (lambda f: (f.seek(2), f.write("XY"), f.close()))(open("d/a.txt", "r+")))
t("read2", lambda: open("d/a.txt").read())
t("x existing", lambda: open("d/a.txt", "x"))
t("x new", lambda: open("d/b.txt", "x").write("b"))
t("read-only write", lambda: open("d/a.txt", "r").write("no"))
def ro_fd():
    fd = os.open("d/a.txt", os.O_RDONLY)
    try:
        return os.write(fd, b"zz")
    finally:
        os.close(fd)
t("os.open rdonly write", ro_fd)
def wo_fd():
    fd = os.open("d/a.txt", os.O_WRONLY)
    try:
        return os.read(fd, 3)
    finally:
        os.close(fd)
t("os.open wronly read", wo_fd)
def trunc():
    fd = os.open("d/c.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"0123456789")
    os.ftruncate(fd, 4)
    os.close(fd)
    return open("d/c.txt").read()
t("ftruncate", trunc)
def ro_trunc():
    fd = os.open("d/c.txt", os.O_RDONLY)
    try:
        return os.ftruncate(fd, 1)
    finally:
        os.close(fd)
t("ftruncate read-only", ro_trunc)
t("size", lambda: os.stat("d/c.txt").st_size)
t("isdir", lambda: stat.S_ISDIR(os.stat("d").st_mode))
t("listdir", lambda: sorted(os.listdir("d")))
t("scandir", lambda: sorted((e.name, e.is_dir(), e.is_file()) for e in os.scandir("d")))
t("rename", lambda: os.rename("d/b.txt", "d/e/b2.txt"))
t("rename over dir", lambda: os.rename("d/a.txt", "d/e"))
t("replace", lambda: os.replace("d/c.txt", "d/e/b2.txt"))
t("listdir e", lambda: sorted(os.listdir("d/e")))
t("symlink", lambda: os.symlink("a.txt", "d/link"))
t("readlink", lambda: os.readlink("d/link"))
t("islink", lambda: os.path.islink("d/link"))
t("lstat type", lambda: stat.S_ISLNK(os.lstat("d/link").st_mode))
t("link", lambda: os.link("d/a.txt", "d/hard"))
t("nlink", lambda: os.stat("d/a.txt").st_nlink)
t("unlink dir", lambda: os.unlink("d/e"))
t("rmdir nonempty", lambda: os.rmdir("d/e"))
t("rmdir missing", lambda: os.rmdir("d/zz"))
t("utime", lambda: (os.utime("d/a.txt", (1000000000, 1200000000)), os.stat("d/a.txt").st_mtime)[1])
t("seek end", lambda: (lambda f: (f.seek(0, 2), f.tell())[1])(open("d/a.txt", "rb")))
t("seek neg", lambda: (lambda f: f.seek(-100, 0))(open("d/a.txt", "rb")))
t("open dir", lambda: open("d"))
t("open missing", lambda: open("nope/x"))
t("escape", lambda: open("../etc/passwd"))
t("abs escape", lambda: open("/etc/passwd"))
t("getcwd", lambda: os.getcwd())
def big():
    with open("d/big", "wb") as f:
        f.write(b"x" * (3 << 20))
    with open("d/big", "rb") as f:
        return len(f.read())
t("big", big)
t("append mode tell", lambda: (lambda f: (f.write("1"), f.tell())[1])(open("d/a.txt", "a")))
t("walk", lambda: sorted((r, sorted(ds), sorted(fs)) for r, ds, fs in os.walk("d")))
