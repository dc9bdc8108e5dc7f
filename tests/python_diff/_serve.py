"""CPython's own SyncManager server, on a free port of 127.0.0.1: prints the port, then serves
until killed. The process's authkey is the manager's, as when a script starts its own manager,
so that proxies the server unpickles (d.update(other_proxy)) can connect back."""
import multiprocessing, sys
from multiprocessing.managers import SyncManager

key = sys.argv[1].encode()
multiprocessing.current_process().authkey = key
server = SyncManager(address=("127.0.0.1", 0), authkey=key).get_server()
print(server.address[1], flush=True)
server.serve_forever()
