"""Runs every script named after host, port and key, each as its own __main__, and prints
`=== name` before the lines each printed. A script that dies prints `CRASHED: ...` last."""
import contextlib, io, os, runpy, sys, traceback

host, port, key = sys.argv[1:4]
for path in sys.argv[4:]:
    out = io.StringIO()
    sys.argv = [path, host, port, key]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
    except BaseException as e:
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        out.write("CRASHED: %s\n" % last)
    sys.stdout.write("=== %s\n%s" % (os.path.basename(path), out.getvalue()))
    sys.stdout.flush()
