"""Shared by the differential scripts: connect to the manager named on the command line, and
print one labelled line per observation, the same way against any server."""
import sys
import multiprocessing
from multiprocessing.managers import SyncManager, RemoteError

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
# Proxies rebuilt from a pickle (a proxy inside a list) authenticate with the process's key.
multiprocessing.current_process().authkey = key
m = SyncManager(address=(host, port), authkey=key)
m.connect()


def outcome(call):
    """What `call()` gives: its result's repr, or the exception as `Type: message`. A
    RemoteError shows the last line of the remote traceback only (the rest names files)."""
    try:
        result = call()
    except RemoteError as e:
        lines = [l for l in str(e).splitlines() if l.strip() and not l.startswith("---")]
        return "RemoteError: " + (lines[-1] if lines else "")
    except Exception as e:
        return "%s: %s" % (type(e).__name__, e)
    return repr(result)


def show(label, call):
    print("%s: %s" % (label, outcome(call)))


def kind(label, call):
    """Only the type of the outcome: for errors whose words change between Python versions."""
    text = outcome(call)
    print("%s: %s" % (label, text.split(":")[0] if ":" in text else "ok"))
