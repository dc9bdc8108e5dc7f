//! Wire compatibility with real CPython: `multiprocessing.connection` handshakes in both roles
//! and pickled values in both directions, against every CPython 3.x found.
//!
//! The interpreters are `python3` on `PATH` and `$(pyenv root)/versions/*/bin/python3` (one per
//! version); a missing one is skipped with a message. For each, over TCP (127.0.0.1, port 0) and
//! over a Unix socket in a temporary directory:
//!
//! - Python listens (`multiprocessing.connection.Listener`) and Rust dials: with the right key
//!   both handshakes pass; with a wrong key Python's `accept` raises `AuthenticationError` and
//!   Rust fails with [`Error::Auth`].
//! - Rust listens and Python dials (`multiprocessing.connection.Client`): the same, the other
//!   way round.
//! - On each authenticated connection Python sends objects (one by one with `send`, then the
//!   whole list pickled with every protocol from 2 to its highest) that Rust decodes and
//!   compares with what it expects; then Rust sends values it encoded, which Python loads,
//!   compares with the objects it expects and answers `(equal, repr)`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use manager::python::connection::{client_handshake, server_handshake, write_frame_long, Digest};
use manager::python::pickle::{PyException, PyProxy, PyValue};
use manager::python::PyConnection;
use manager::{Address, AuthKey, Error, Token};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::process::{Child, ChildStdout, Command};

const KEY: &[u8] = b"python-wire-secret";
const WRONG_KEY: &[u8] = b"not-the-key";
/// How long one scenario may take before the test gives up (a hang, not a slow run).
const LIMIT: Duration = Duration::from_secs(120);

/// The Python side of every scenario.
const SCRIPT: &str = r#"
import io, pickle, queue, sys
import multiprocessing.connection as mc
import multiprocessing.managers as mm

role, family, where, key = sys.argv[1], sys.argv[2], sys.argv[3], bytes.fromhex(sys.argv[4])

TOKEN = mm.Token('ItemWrapper', ('127.0.0.1', 41219), '7f47875545d0')
UNIX_TOKEN = mm.Token('u', '/tmp/x.sock', 'ff')
E = ValueError('with state'); E.code = 42
SHARED = [1]

class P:
    def __reduce__(self):
        return (mm.RebuildProxy, (mm.AutoProxy, TOKEN, 'pickle', {'exposed': ('a', 'b')}))

class D:
    def __reduce__(self):
        return (mm.RebuildProxy, (mm.DictProxy, UNIX_TOKEN, 'pickle', {}))

OBJS = [None, True, False, 0, 1, -1, 255, 256, 65535, 65536, 2**31, -2**31 - 1, 2**63, -2**70,
        2**127 - 1, -2**127, 1.5, -0.0, float('inf'), 'str', 'é€', 'x' * 300, b'', b'bytes',
        b'y' * 300, bytearray(b'ba'), bytearray(), [1, 'a'], (), (1,), (1, 2), (1, 2, 3),
        (1, 2, 3, 4), {'k': 1, 2: [3], 'b': None}, set(), {1, 2}, frozenset({3}),
        slice(1, 3, None), slice(None, None, -1), 3+4j, ValueError('boom'), KeyError('k'),
        StopIteration(), queue.Empty(), E, TOKEN, UNIX_TOKEN, P(), D(), list(range(1001)),
        {i: str(i) for i in range(1001)}, (SHARED, SHARED), ('#PROXY', (('a', 'b'), TOKEN))]

class Stub:
    def __init__(self, name): self.name = name
    def __call__(self, *a, **k): return ('<call %s>' % self.name, a, k)
    def __eq__(self, o): return isinstance(o, Stub) and o.name == self.name
    def __hash__(self): return hash(self.name)
    def __repr__(self): return '<%s>' % self.name

class U(pickle.Unpickler):
    # Proxies would connect to their manager when rebuilt: stand-ins record the call instead.
    def find_class(self, module, name):
        if module == 'multiprocessing.managers' and name != 'Token':
            return Stub(module + '.' + name)
        return super().find_class(module, name)

def rebuilt(cls, token, kwds):
    return ('<call multiprocessing.managers.RebuildProxy>',
            (Stub('multiprocessing.managers.' + cls), token, 'pickle', kwds), {})

A = AttributeError('msg'); A.name = 'attr'
RTOKEN = mm.Token('dict', ('127.0.0.1', 50000), '7f00')
QTOKEN = mm.Token('Queue', '/tmp/mgr.sock', 'ff')
PROXY_REPLY = ('#PROXY', (('a', 'b'), RTOKEN))
EXPECTED = [None, True, False, 0, 255, 256, 65535, 65536, -1, 2**31, -2**31 - 1, 2**64,
            -2**100, 2**127 - 1, -2**127, 1.5, float('-inf'), 'str', 'é€', 'z' * 300, b'',
            b'b' * 300, bytearray(b'ba'), bytearray(), [1, 'a'], list(range(2500)), (), (1,),
            (1, 2), (1, 2, 3), (1, 2, 3, 4), {'b': 1, 'a': 2, 3: None},
            {i: -i for i in range(2500)}, set(), {1, 2}, frozenset(), frozenset({'x'}),
            slice(1, None, -1), complex(1, -2.5), ValueError('boom'), KeyError('zz'),
            StopIteration(), queue.Empty(), A, RTOKEN, QTOKEN,
            rebuilt('AutoProxy', RTOKEN, {'exposed': ('get', 'set')}),
            rebuilt('DictProxy', QTOKEN, {}),
            ('#RETURN', ('7f478784e550', ('get_x', 'set_x'))), ('#ERROR', ValueError('boom')),
            PROXY_REPLY, PROXY_REPLY, ('#TRACEBACK', 'Traceback (most recent call last):\n  x\n'),
            'long header']

def canon(o):
    t = type(o)
    if isinstance(o, BaseException):
        return ('exc', t.__module__, t.__qualname__, canon(o.args),
                canon(sorted(vars(o).items())), canon(getattr(o, 'name', None)))
    if isinstance(o, mm.Token):
        return ('token', o.typeid, canon(o.address), o.id)
    if isinstance(o, Stub):
        return ('stub', o.name)
    if isinstance(o, dict):
        return ('dict', tuple((canon(k), canon(v)) for k, v in o.items()))
    if isinstance(o, (list, tuple)):
        return (t.__name__, tuple(canon(x) for x in o))
    if isinstance(o, (set, frozenset)):
        return (t.__name__, frozenset(canon(x) for x in o))
    return (t.__name__, o)

def exchange(c):
    c.send(tuple(sys.version_info[:2]))
    c.send(len(OBJS))
    c.send(pickle.HIGHEST_PROTOCOL)
    for o in OBJS:
        c.send(o)
    for p in range(2, pickle.HIGHEST_PROTOCOL + 1):
        c.send_bytes(pickle.dumps(OBJS, protocol=p))
    i = 0
    while True:
        buf = c.recv_bytes()
        if buf == b'END':
            break
        try:
            obj = U(io.BytesIO(buf)).load()
            ok = i < len(EXPECTED) and canon(obj) == canon(EXPECTED[i])
            text = repr(obj)
        except Exception as e:
            ok, text = False, 'cannot load: %r' % (e,)
        c.send((ok, text))
        i += 1
    print('CHECKED', i, flush=True)

if role == 'listen':
    if family == 'tcp':
        listener = mc.Listener(('127.0.0.1', 0), authkey=key)
        print('ADDRESS', listener.address[1], flush=True)
    else:
        listener = mc.Listener(where, family='AF_UNIX', authkey=key)
        print('ADDRESS', where, flush=True)
    c = listener.accept()
    print('ACCEPTED', flush=True)
    exchange(c)
    c.close()
    try:
        listener.accept()
        print('UNEXPECTED ACCEPT', flush=True)
    except mc.AuthenticationError as e:
        print('AUTHERR', e, flush=True)
    listener.close()
else:
    address = ('127.0.0.1', int(where)) if family == 'tcp' else where
    c = mc.Client(address, family='AF_INET' if family == 'tcp' else 'AF_UNIX', authkey=key)
    print('CONNECTED', flush=True)
    exchange(c)
    c.close()
    try:
        mc.Client(address, authkey=b'wrong key')
        print('UNEXPECTED CONNECT', flush=True)
    except mc.AuthenticationError as e:
        print('AUTHERR', e, flush=True)
print('DONE', flush=True)
"#;

/// A CPython interpreter found on this machine.
#[derive(Debug, Clone)]
struct Python {
    path: PathBuf,
    version: (u32, u32, u32),
}

impl Python {
    fn label(&self) -> String {
        let (a, b, c) = self.version;
        format!("CPython {a}.{b}.{c} ({})", self.path.display())
    }
}

fn version_of(path: &Path) -> Option<(u32, u32, u32)> {
    let output = std::process::Command::new(path)
        .args(["-c", "import sys; print('%d %d %d' % sys.version_info[:3])"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

fn pyenv_root() -> Option<PathBuf> {
    if let Ok(output) = std::process::Command::new("pyenv").arg("root").output() {
        if output.status.success() {
            let root = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if !root.is_empty() {
                return Some(PathBuf::from(root));
            }
        }
    }
    if let Some(root) = std::env::var_os("PYENV_ROOT") {
        return Some(PathBuf::from(root));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pyenv"))
}

/// `python3` and every CPython 3.x under pyenv, one per version.
fn pythons() -> Vec<Python> {
    let mut candidates = vec![PathBuf::from("python3")];
    if let Some(root) = pyenv_root() {
        if let Ok(entries) = std::fs::read_dir(root.join("versions")) {
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin").join("python3"))
                .filter(|p| p.exists())
                .collect();
            found.sort();
            candidates.extend(found);
        }
    }
    let mut pythons: Vec<Python> = Vec::new();
    for path in candidates {
        match version_of(&path) {
            Some(version) if version.0 == 3 => {
                if pythons.iter().all(|p| p.version != version) {
                    pythons.push(Python { path, version });
                }
            }
            Some(_) => {}
            None if path == Path::new("python3") => {
                println!("SKIPPED: python3 is not on PATH (or does not run)")
            }
            None => println!("SKIPPED: {} does not run", path.display()),
        }
    }
    for (major, minor) in [(3, 11), (3, 12), (3, 13)] {
        if !pythons
            .iter()
            .any(|p| (p.version.0, p.version.1) == (major, minor))
        {
            println!("SKIPPED: no CPython {major}.{minor} found (python3 or pyenv)");
        }
    }
    pythons
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("mgr-pywire-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running Python script: killed and reaped when dropped, whatever happened.
struct Script {
    child: Option<Child>,
    lines: Lines<BufReader<ChildStdout>>,
    label: String,
}

impl Script {
    fn start(python: &Python, role: &str, family: &str, address: &str) -> Script {
        let mut child = Command::new(&python.path)
            .arg("-c")
            .arg(SCRIPT)
            .args([role, family, address, &hex_of(KEY)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.label()));
        let stdout = child.stdout.take().expect("piped stdout");
        Script {
            child: Some(child),
            lines: BufReader::new(stdout).lines(),
            label: format!("{} as {role} over {family}", python.label()),
        }
    }

    /// The next line the script prints.
    async fn line(&mut self) -> String {
        match self.lines.next_line().await {
            Ok(Some(line)) => line,
            other => {
                let stderr = self.finish().await;
                panic!(
                    "{}: the script printed no more lines ({other:?})\n{stderr}",
                    self.label
                )
            }
        }
    }

    /// Waits for the script to exit and returns its stderr; fails if it did not exit cleanly.
    async fn finish(&mut self) -> String {
        let Some(child) = self.child.take() else {
            return String::new();
        };
        let output = child.wait_with_output().await.expect("wait for python");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(
            output.status.success(),
            "{}: exited with {}\n{stderr}",
            self.label,
            output.status
        );
        stderr
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        // Only reached with the script still running when a check failed: kill it and reap it
        // here (a blocking `waitpid`, which returns as soon as the kill lands).
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let _ = child.start_kill();
            if let Some(pid) = pid {
                let mut status = 0;
                // SAFETY: waits for our own child process; `status` is a valid pointer.
                unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
            }
        }
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn s(text: &str) -> PyValue {
    PyValue::str(text)
}

fn int(i: i128) -> PyValue {
    PyValue::Int(i)
}

fn tuple(items: Vec<PyValue>) -> PyValue {
    PyValue::Tuple(items)
}

fn token(typeid: &str, address: Address, id: u64) -> Token {
    Token {
        typeid: typeid.to_string(),
        address,
        id,
        instance: 0,
    }
}

/// What the script's `OBJS` must decode to.
fn python_objects(version: (i128, i128)) -> Vec<PyValue> {
    let item_wrapper = token(
        "ItemWrapper",
        Address::from(("127.0.0.1", 41219)),
        0x7f47875545d0,
    );
    let unix = token("u", Address::unix("/tmp/x.sock"), 0xff);
    let empty_module = if version < (3, 7) { "queue" } else { "_queue" };
    let shared = PyValue::List(vec![int(1)]);
    vec![
        PyValue::None,
        PyValue::Bool(true),
        PyValue::Bool(false),
        int(0),
        int(1),
        int(-1),
        int(255),
        int(256),
        int(65535),
        int(65536),
        int(1 << 31),
        int(-(1 << 31) - 1),
        int(1 << 63),
        int(-(1 << 70)),
        int(i128::MAX),
        int(i128::MIN),
        PyValue::Float(1.5),
        PyValue::Float(-0.0),
        PyValue::Float(f64::INFINITY),
        s("str"),
        s("é€"),
        s(&"x".repeat(300)),
        PyValue::Bytes(vec![]),
        PyValue::Bytes(b"bytes".to_vec()),
        PyValue::Bytes(vec![b'y'; 300]),
        PyValue::ByteArray(b"ba".to_vec()),
        PyValue::ByteArray(vec![]),
        PyValue::List(vec![int(1), s("a")]),
        tuple(vec![]),
        tuple(vec![int(1)]),
        tuple(vec![int(1), int(2)]),
        tuple(vec![int(1), int(2), int(3)]),
        tuple(vec![int(1), int(2), int(3), int(4)]),
        PyValue::Dict(vec![
            (s("k"), int(1)),
            (int(2), PyValue::List(vec![int(3)])),
            (s("b"), PyValue::None),
        ]),
        PyValue::Set(vec![]),
        PyValue::Set(vec![int(1), int(2)]),
        PyValue::FrozenSet(vec![int(3)]),
        PyValue::slice(int(1), int(3), PyValue::None),
        PyValue::slice(PyValue::None, PyValue::None, int(-1)),
        PyValue::Complex { re: 3.0, im: 4.0 },
        PyException::builtin("ValueError", vec![s("boom")]).into(),
        PyException::builtin("KeyError", vec![s("k")]).into(),
        PyException::builtin("StopIteration", vec![]).into(),
        PyException::new(empty_module, "Empty", vec![]).into(),
        PyException::builtin("ValueError", vec![s("with state")])
            .with_state(vec![(s("code"), int(42))])
            .into(),
        PyValue::Token(item_wrapper.clone()),
        PyValue::Token(unix.clone()),
        PyProxy::auto(item_wrapper.clone(), Some(&["a", "b"])).into(),
        PyProxy::of_class("DictProxy", unix).into(),
        PyValue::List((0..1001).map(int).collect()),
        PyValue::Dict((0..1001).map(|i| (int(i), s(&i.to_string()))).collect()),
        tuple(vec![shared.clone(), shared]),
        tuple(vec![
            s("#PROXY"),
            tuple(vec![
                tuple(vec![s("a"), s("b")]),
                PyValue::Token(item_wrapper),
            ]),
        ]),
    ]
}

/// What Rust sends; the script's `EXPECTED` lists the same objects.
fn rust_values() -> Vec<PyValue> {
    let rtoken = token("dict", Address::from(("127.0.0.1", 50000)), 0x7f00);
    let qtoken = token("Queue", Address::unix("/tmp/mgr.sock"), 0xff);
    let proxy_reply = tuple(vec![
        s("#PROXY"),
        tuple(vec![
            tuple(vec![s("a"), s("b")]),
            PyValue::Token(rtoken.clone()),
        ]),
    ]);
    vec![
        PyValue::None,
        PyValue::Bool(true),
        PyValue::Bool(false),
        int(0),
        int(255),
        int(256),
        int(65535),
        int(65536),
        int(-1),
        int(1 << 31),
        int(-(1 << 31) - 1),
        int(1 << 64),
        int(-(1 << 100)),
        int(i128::MAX),
        int(i128::MIN),
        PyValue::Float(1.5),
        PyValue::Float(f64::NEG_INFINITY),
        s("str"),
        s("é€"),
        s(&"z".repeat(300)),
        PyValue::Bytes(vec![]),
        PyValue::Bytes(vec![b'b'; 300]),
        PyValue::ByteArray(b"ba".to_vec()),
        PyValue::ByteArray(vec![]),
        PyValue::List(vec![int(1), s("a")]),
        PyValue::List((0..2500).map(int).collect()),
        tuple(vec![]),
        tuple(vec![int(1)]),
        tuple(vec![int(1), int(2)]),
        tuple(vec![int(1), int(2), int(3)]),
        tuple(vec![int(1), int(2), int(3), int(4)]),
        PyValue::Dict(vec![
            (s("b"), int(1)),
            (s("a"), int(2)),
            (int(3), PyValue::None),
        ]),
        PyValue::Dict((0..2500).map(|i| (int(i), int(-i))).collect()),
        PyValue::Set(vec![]),
        PyValue::Set(vec![int(1), int(2)]),
        PyValue::FrozenSet(vec![]),
        PyValue::FrozenSet(vec![s("x")]),
        PyValue::slice(int(1), PyValue::None, int(-1)),
        PyValue::Complex { re: 1.0, im: -2.5 },
        PyException::builtin("ValueError", vec![s("boom")]).into(),
        PyException::builtin("KeyError", vec![s("zz")]).into(),
        PyException::builtin("StopIteration", vec![]).into(),
        PyException::new("queue", "Empty", vec![]).into(),
        PyException::builtin("AttributeError", vec![s("msg")])
            .with_state(vec![(s("name"), s("attr"))])
            .into(),
        PyValue::Token(rtoken.clone()),
        PyValue::Token(qtoken.clone()),
        PyProxy::auto(rtoken, Some(&["get", "set"])).into(),
        PyProxy::of_class("DictProxy", qtoken).into(),
        tuple(vec![
            s("#RETURN"),
            tuple(vec![s("7f478784e550"), tuple(vec![s("get_x"), s("set_x")])]),
        ]),
        tuple(vec![
            s("#ERROR"),
            PyException::builtin("ValueError", vec![s("boom")]).into(),
        ]),
        proxy_reply.clone(),
        // The same again, without FRAME (sent with other options below).
        proxy_reply,
        tuple(vec![
            s("#TRACEBACK"),
            s("Traceback (most recent call last):\n  x\n"),
        ]),
        // Sent with the 12-byte header where the peer reads it (3.8+).
        s("long header"),
    ]
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn recv(conn: &mut PyConnection<Box<dyn Stream>>, what: &str) -> PyValue {
    match conn.recv().await {
        Ok(Some(value)) => value,
        other => panic!("receiving {what}: {other:?}"),
    }
}

/// Rust's half of the script's `exchange`.
async fn exchange(conn: &mut PyConnection<Box<dyn Stream>>, label: &str) {
    let version = match recv(conn, "the version").await {
        PyValue::Tuple(items) => match items.as_slice() {
            [PyValue::Int(major), PyValue::Int(minor)] => (*major, *minor),
            other => panic!("{label}: version {other:?}"),
        },
        other => panic!("{label}: version {other:?}"),
    };
    let count = recv(conn, "the count").await;
    let highest = match recv(conn, "the highest protocol").await {
        PyValue::Int(p) => p,
        other => panic!("{label}: protocol {other:?}"),
    };
    let expected = python_objects(version);
    assert_eq!(count, PyValue::Int(expected.len() as i128), "{label}");
    for (i, want) in expected.iter().enumerate() {
        let got = recv(conn, "an object").await;
        assert_eq!(&got, want, "{label}: object {i} sent by Python");
    }
    for protocol in 2..=highest {
        let got = recv(conn, "a list").await;
        assert_eq!(
            got,
            PyValue::List(expected.clone()),
            "{label}: OBJS pickled with protocol {protocol}"
        );
    }
    let values = rust_values();
    let last = values.len() - 1;
    for (i, value) in values.iter().enumerate() {
        if i == last - 2 {
            let options = manager::python::pickle::EncodeOptions {
                frame: false,
                ..Default::default()
            };
            let bytes = manager::python::pickle::encode_with(value, &options).unwrap();
            conn.send_bytes(&bytes).await.unwrap();
        } else if i == last && version >= (3, 8) {
            let bytes = manager::python::pickle::encode(value).unwrap();
            write_frame_long(conn.get_mut(), &bytes).await.unwrap();
        } else {
            conn.send(value).await.unwrap();
        }
        match recv(conn, "a verdict").await {
            PyValue::Tuple(items) => match items.as_slice() {
                [PyValue::Bool(true), PyValue::Str(_)] => {}
                [PyValue::Bool(false), PyValue::Str(repr)] => {
                    panic!("{label}: Python loaded value {i} ({value}) as {repr}, not as expected")
                }
                other => panic!("{label}: verdict {other:?}"),
            },
            other => panic!("{label}: verdict {other:?}"),
        }
    }
    conn.send_bytes(b"END").await.unwrap();
}

async fn dial(family: &str, address: &str) -> Box<dyn Stream> {
    if family == "tcp" {
        let stream = TcpStream::connect(address)
            .await
            .expect("connect to python");
        stream.set_nodelay(true).unwrap();
        Box::new(stream)
    } else {
        Box::new(
            UnixStream::connect(address)
                .await
                .expect("connect to python"),
        )
    }
}

fn expected_digest(python: &Python) -> Digest {
    if (python.version.0, python.version.1) >= (3, 12) {
        Digest::Sha256
    } else {
        Digest::LegacyMd5
    }
}

/// Python listens; Rust dials with the right key, then with a wrong one.
async fn python_listens(python: &Python, family: &str) {
    let dir = TempDir::new("listen");
    let path = dir.0.join("py.sock");
    let mut script = Script::start(python, "listen", family, &path.to_string_lossy());
    let label = script.label.clone();
    let line = script.line().await;
    let address = line
        .strip_prefix("ADDRESS ")
        .unwrap_or_else(|| panic!("{label}: {line}"))
        .to_string();
    let address = if family == "tcp" {
        format!("127.0.0.1:{address}")
    } else {
        address
    };

    let mut stream = dial(family, &address).await;
    let info = client_handshake(&mut stream, &AuthKey::new(KEY))
        .await
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(info.ours, expected_digest(python), "{label}");
    assert_eq!(info.peer, expected_digest(python), "{label}");
    assert_eq!(script.line().await, "ACCEPTED", "{label}");
    let mut conn = PyConnection::new(stream);
    exchange(&mut conn, &label).await;
    assert!(script.line().await.starts_with("CHECKED "), "{label}");
    drop(conn);

    let mut stream = dial(family, &address).await;
    let result = client_handshake(&mut stream, &AuthKey::new(WRONG_KEY)).await;
    match result {
        Err(Error::Auth(message)) => assert!(message.contains("rejected"), "{label}: {message}"),
        other => panic!("{label}: a wrong key gave {other:?}"),
    }
    let line = script.line().await;
    assert!(line.starts_with("AUTHERR"), "{label}: {line}");
    assert_eq!(script.line().await, "DONE", "{label}");
    script.finish().await;
    println!("ok: {label} ({line})");
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

async fn accept(listener: &Listener) -> Box<dyn Stream> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, _) = l.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            Box::new(stream)
        }
        Listener::Unix(l) => Box::new(l.accept().await.unwrap().0),
    }
}

/// Rust listens; Python dials with the right key, then with a wrong one.
async fn python_dials(python: &Python, family: &str) {
    let dir = TempDir::new("dial");
    let path = dir.0.join("rust.sock");
    let (listener, address) = if family == "tcp" {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (Listener::Tcp(listener), port.to_string())
    } else {
        let listener = UnixListener::bind(&path).unwrap();
        (Listener::Unix(listener), path.to_string_lossy().to_string())
    };
    let mut script = Script::start(python, "connect", family, &address);
    let label = script.label.clone();

    let mut stream = accept(&listener).await;
    let info = server_handshake(&mut stream, &AuthKey::new(KEY))
        .await
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(info.peer, expected_digest(python), "{label}");
    assert_eq!(info.ours, expected_digest(python), "{label}");
    assert_eq!(script.line().await, "CONNECTED", "{label}");
    let mut conn = PyConnection::new(stream);
    exchange(&mut conn, &label).await;
    assert!(script.line().await.starts_with("CHECKED "), "{label}");
    drop(conn);

    let mut stream = accept(&listener).await;
    match server_handshake(&mut stream, &AuthKey::new(KEY)).await {
        Err(Error::Auth(message)) => {
            assert!(
                message.contains("digest received was wrong"),
                "{label}: {message}"
            )
        }
        other => panic!("{label}: a wrong key gave {other:?}"),
    }
    let line = script.line().await;
    assert!(line.starts_with("AUTHERR"), "{label}: {line}");
    assert_eq!(script.line().await, "DONE", "{label}");
    script.finish().await;
    println!("ok: {label} ({line})");
}

async fn for_every_python(role: &str, family: &str) {
    let pythons = pythons();
    if pythons.is_empty() {
        println!("SKIPPED: no CPython 3.x found; nothing to test against");
        return;
    }
    for python in &pythons {
        let scenario = async {
            if role == "listen" {
                python_listens(python, family).await
            } else {
                python_dials(python, family).await
            }
        };
        if tokio::time::timeout(LIMIT, scenario).await.is_err() {
            panic!(
                "{} as {role} over {family}: no end in sight",
                python.label()
            );
        }
    }
}

#[tokio::test]
async fn python_listener_rust_client_over_tcp() {
    for_every_python("listen", "tcp").await;
}

#[tokio::test]
async fn python_listener_rust_client_over_unix() {
    for_every_python("listen", "unix").await;
}

#[tokio::test]
async fn rust_listener_python_client_over_tcp() {
    for_every_python("dial", "tcp").await;
}

#[tokio::test]
async fn rust_listener_python_client_over_unix() {
    for_every_python("dial", "unix").await;
}
