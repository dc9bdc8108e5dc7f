//! Iterating the built-in list and dict from Rust clients (`iter()`): each item is read as it
//! is stored when the server produces it, a stream window ahead of the consumer at most, as
//! Python's list and dict iterators read; a dict whose size or keys change meanwhile ends its
//! stream with Python's `RuntimeError`.
//!
//! Real processes and real sockets: the server runs in a child process (`BaseManager::start`),
//! another client that appends is a spawned process, and one that iterates is killed
//! mid-stream. What the server's iterators hold is seen through the objects they keep alive (a
//! queue stored in the list being iterated), counted with `number_of_objects`.
//!
//! This binary spawns children by re-running itself, so it has its own `main` (declared with
//! `harness = false`) that calls `manager::init()` first.

#[macro_use]
mod common;

use common::{wait_until, ChildGuard};
use futures::StreamExt;
use manager::sync::{DictBlockingProxy, ListBlockingProxy, QueueBlockingProxy};
use manager::wire::STREAM_WINDOW;
use manager::{Address, BaseManager, BlockingManager, Error, Process, RemoteErrorKind};

const WINDOW: i64 = STREAM_WINDOW as i64;

fn start() -> BlockingManager {
    BaseManager::new(Address::local_tcp())
        .start(manager::sync::registry)
        .expect("cannot start the server")
}

/// Polls until the server holds `n` objects.
fn wait_objects(manager: &BlockingManager, n: u64, what: &str) {
    wait_until(what, || match manager.number_of_objects() {
        Ok(count) if count == n => Ok(()),
        other => Err(format!("{other:?} objects, not {n}")),
    });
}

/// The error a stream ended with: its kind and message.
fn remote(item: &Result<impl std::fmt::Debug, Error>) -> (RemoteErrorKind, String) {
    match item {
        Err(Error::Remote(e)) => (e.kind, e.message.clone()),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Lists.
// ---------------------------------------------------------------------------------------------

/// A list iterates in order, through the blocking iterator and the async stream, and an
/// empty list yields nothing.
fn a_list_iterates_in_order() {
    let manager = start();
    let list = manager.list(&(0..1000).collect::<Vec<i64>>()).unwrap();
    let items: Vec<i64> = list.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(items, (0..1000).collect::<Vec<_>>());
    let empty = manager.list::<i64>(&[]).unwrap();
    assert_eq!(empty.iter().unwrap().count(), 0);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let list = list.into_async();
    runtime.block_on(async {
        let items: Vec<i64> = list
            .iter()
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(items, (0..1000).collect::<Vec<_>>());
        // Stream combinators, and the blocking form of an async stream's items.
        let evens: Vec<i64> = list
            .iter()
            .await
            .unwrap()
            .map(Result::unwrap)
            .filter(|i| std::future::ready(i % 2 == 0))
            .take(3)
            .collect()
            .await;
        assert_eq!(evens, vec![0, 2, 4]);
    });
    let blocking = runtime.block_on(list.iter()).unwrap().into_blocking();
    drop(runtime);
    assert_eq!(blocking.count(), 1000);
}

/// Each item is read when the server produces it, as Python's list iterator reads it: an item
/// set past the window of what was produced is seen with its new value, items appended before
/// the index passes the end are seen, and an item removed before the index shifts the rest.
fn a_list_item_is_read_when_it_is_produced() {
    let manager = start();
    let n = 3 * WINDOW;
    let list = manager.list(&(0..n).collect::<Vec<i64>>()).unwrap();
    let mut items = list.iter().unwrap();
    assert_eq!(items.next().unwrap().unwrap(), 0);
    // The server has produced at most a window past the one item consumed.
    list.set(2 * WINDOW + 5, &-1).unwrap();
    list.append(&1000).unwrap();
    let rest: Vec<i64> = items.collect::<Result<_, _>>().unwrap();
    let mut expected: Vec<i64> = (1..n).collect();
    expected[(2 * WINDOW + 4) as usize] = -1;
    expected.push(1000);
    assert_eq!(rest, expected);

    // Removing an item ahead of the index shifts the rest down by one (Python skips one).
    let list = manager.list(&(0..n).collect::<Vec<i64>>()).unwrap();
    let mut items = list.iter().unwrap();
    assert_eq!(items.next().unwrap().unwrap(), 0);
    list.delete(2 * WINDOW).unwrap();
    let rest: Vec<i64> = items.collect::<Result<_, _>>().unwrap();
    let expected: Vec<i64> = (1..n).filter(|i| *i != 2 * WINDOW).collect();
    assert_eq!(rest, expected);
}

/// Appends `items` to `list`, from another process.
#[manager::entry]
fn append_in_child(list: ListBlockingProxy<i64>, items: Vec<i64>) -> Result<(), String> {
    list.extend(&items).map_err(|e| e.to_string())
}

/// Another client process appends while this one iterates: the iteration sees its items.
fn iterating_while_another_process_appends() {
    let manager = start();
    let n = 3 * WINDOW;
    let list = manager.list(&(0..n).collect::<Vec<i64>>()).unwrap();
    let mut items = list.iter().unwrap();
    let mut seen = vec![items.next().unwrap().unwrap()];
    let appended: Vec<i64> = (n..n + 10).collect();
    Process::spawn(append_in_child, (list.clone(), appended))
        .unwrap()
        .join()
        .unwrap();
    for item in items {
        seen.push(item.unwrap());
    }
    assert_eq!(seen, (0..n + 10).collect::<Vec<_>>());
}

/// Proxies inside the items arrive usable, and their references are counted: once every
/// proxy is dropped, the objects are gone.
fn proxies_inside_items_arrive_usable() {
    let manager = start();
    let baseline = manager.number_of_objects().unwrap();
    let queues: Vec<QueueBlockingProxy<i64>> = (0..3).map(|_| manager.queue(0).unwrap()).collect();
    let list = manager.list(&queues).unwrap();
    drop(queues);
    for (i, queue) in list.iter().unwrap().enumerate() {
        queue.unwrap().put(&(i as i64)).unwrap();
    }
    let sums: Vec<i64> = list
        .iter()
        .unwrap()
        .map(|queue| queue.unwrap().get().unwrap())
        .collect();
    assert_eq!(sums, vec![0, 1, 2]);
    wait_objects(&manager, baseline + 4, "the list and its three queues");
    drop(list);
    wait_objects(&manager, baseline, "every object to be released");
}

/// Dropping the stream before its end stops the server's iterator, which was holding the
/// list's value (and so the queue stored in it) alive after the list itself was released.
fn dropping_the_stream_stops_the_server_iterator() {
    let manager = start();
    let baseline = manager.number_of_objects().unwrap();
    let queue = manager.queue::<i64>(0).unwrap();
    let list = manager
        .list::<Option<QueueBlockingProxy<i64>>>(&[])
        .unwrap();
    list.append(&Some(queue.clone())).unwrap();
    list.extend(&vec![None; 3 * STREAM_WINDOW as usize])
        .unwrap();
    drop(queue);
    let mut items = list.iter().unwrap();
    let first = items.next().unwrap().unwrap().expect("the queue");
    first.put(&7).unwrap();
    drop(first);
    drop(list);
    // The list is released; its value, held by the open stream, still holds the queue.
    wait_objects(
        &manager,
        baseline + 1,
        "the list to be released, its queue kept",
    );
    drop(items);
    wait_objects(
        &manager,
        baseline,
        "the stream's iterator to let the queue go",
    );
}

/// Opens a stream on `list`, takes its first item, lets go of every proxy but the stream,
/// tells the parent through `ready`, and waits to be killed.
#[manager::entry]
fn iterate_in_child(
    list: ListBlockingProxy<Option<QueueBlockingProxy<i64>>>,
    ready: QueueBlockingProxy<i64>,
) -> Result<(), String> {
    let mut items = list.iter().map_err(|e| e.to_string())?;
    let first = items.next().ok_or("no item")?.map_err(|e| e.to_string())?;
    drop((first, list));
    ready.put(&1).map_err(|e| e.to_string())?;
    std::thread::sleep(std::time::Duration::from_secs(600));
    drop(items);
    Ok(())
}

/// A client process killed mid-iteration frees the server's iterator: its connection closes,
/// which ends its streams, and the list's value (with the queue in it) goes.
fn a_client_that_dies_mid_iteration_frees_the_iterator() {
    let manager = start();
    let ready = manager.queue::<i64>(0).unwrap();
    let baseline = manager.number_of_objects().unwrap();
    let queue = manager.queue::<i64>(0).unwrap();
    let list = manager
        .list::<Option<QueueBlockingProxy<i64>>>(&[])
        .unwrap();
    list.append(&Some(queue)).unwrap();
    list.extend(&vec![None; 3 * STREAM_WINDOW as usize])
        .unwrap();
    let mut child =
        ChildGuard(Process::spawn(iterate_in_child, (list.clone(), ready.clone())).unwrap());
    assert_eq!(ready.get().unwrap(), 1);
    drop(list);
    wait_objects(
        &manager,
        baseline + 1,
        "the list to be released, its queue kept",
    );
    child.0.kill().unwrap();
    let _ = child.join();
    wait_objects(
        &manager,
        baseline,
        "the dead client's iterator to let the queue go",
    );
}

/// The server going away ends a stream: what had arrived is read, then the connection's
/// error, then nothing.
fn a_connection_that_closes_ends_the_stream() {
    let manager = start();
    let list = manager
        .list(&(0..10 * WINDOW).collect::<Vec<i64>>())
        .unwrap();
    let mut items = list.iter().unwrap();
    assert_eq!(items.next().unwrap().unwrap(), 0);
    manager.shutdown().unwrap();
    let rest: Vec<Result<i64, Error>> = items.by_ref().collect();
    let (last, arrived) = rest.split_last().expect("at least the connection's error");
    assert!(
        matches!(last, Err(e) if e.remote_kind().is_none()),
        "the stream's last item is the connection's error, got {last:?}"
    );
    assert!(
        arrived.len() <= WINDOW as usize,
        "{} items after the close",
        arrived.len()
    );
    for (i, item) in arrived.iter().enumerate() {
        assert_eq!(*item.as_ref().unwrap(), i as i64 + 1);
    }
    assert!(items.next().is_none());
}

// ---------------------------------------------------------------------------------------------
// Dicts.
// ---------------------------------------------------------------------------------------------

/// A dict iterates its keys (or its entries) in insertion order, and a value changed while it
/// iterates is seen.
fn a_dict_iterates_its_keys_in_order() {
    let manager = start();
    let pairs: Vec<(String, i64)> = (0..3 * WINDOW).map(|i| (format!("k{i}"), i)).collect();
    let dict: DictBlockingProxy<String, i64> = manager.dict(&pairs).unwrap();
    let keys: Vec<String> = dict.iter().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        keys,
        pairs.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    );
    let mut entries = dict.iter_items().unwrap();
    assert_eq!(entries.next().unwrap().unwrap(), ("k0".to_string(), 0));
    let late = format!("k{}", 2 * WINDOW + 5);
    dict.insert(&late, &-1).unwrap();
    let rest: Vec<(String, i64)> = entries.collect::<Result<_, _>>().unwrap();
    assert_eq!(rest.len(), pairs.len() - 1);
    assert_eq!(rest[(2 * WINDOW + 4) as usize], (late, -1));
    let empty: DictBlockingProxy<String, i64> = manager.dict(&[]).unwrap();
    assert_eq!(empty.iter().unwrap().count(), 0);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dict = dict.into_async();
    runtime.block_on(async {
        let keys: Vec<String> = dict
            .iter()
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(keys.len(), pairs.len());
        let entries: Vec<(String, i64)> = dict
            .iter_items()
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(entries[0], ("k0".to_string(), 0));
    });
}

/// Inserts `key` into `dict` from another process.
#[manager::entry]
fn insert_in_child(dict: DictBlockingProxy<String, i64>, key: String) -> Result<(), String> {
    dict.insert(&key, &0).map(drop).map_err(|e| e.to_string())
}

/// A dict whose size changes while it iterates (another process inserts a key) ends the
/// stream with Python's `RuntimeError`, after the items already produced; one whose keys
/// change under the same size (the key last produced removed) does too.
fn a_dict_that_changes_while_it_iterates_ends_the_stream() {
    let manager = start();
    let pairs: Vec<(String, i64)> = (0..3 * WINDOW).map(|i| (format!("k{i}"), i)).collect();
    let dict: DictBlockingProxy<String, i64> = manager.dict(&pairs).unwrap();
    let mut keys = dict.iter().unwrap();
    assert_eq!(keys.next().unwrap().unwrap(), "k0");
    Process::spawn(insert_in_child, (dict.clone(), "new".to_string()))
        .unwrap()
        .join()
        .unwrap();
    let rest: Vec<Result<String, Error>> = keys.collect();
    let (last, produced) = rest.split_last().unwrap();
    assert_eq!(
        remote(last),
        (
            RemoteErrorKind::Runtime,
            "dictionary changed size during iteration".to_string()
        )
    );
    assert!(
        produced.len() <= WINDOW as usize,
        "{} items",
        produced.len()
    );
    for (i, key) in produced.iter().enumerate() {
        assert_eq!(*key.as_ref().unwrap(), format!("k{}", i + 1));
    }

    // The first key goes and another comes: the same size, and every key the stream has yet
    // to produce has moved (Python reports such a change rather than skip a key unseen). The
    // server may produce between the two calls, and see the size changed for a moment: then
    // that is the error. Either way no key is skipped or given twice.
    let dict: DictBlockingProxy<String, i64> = manager.dict(&pairs).unwrap();
    let mut keys = dict.iter().unwrap();
    assert_eq!(keys.next().unwrap().unwrap(), "k0");
    dict.remove(&"k0".to_string()).unwrap();
    dict.insert(&"q".to_string(), &4).unwrap();
    let rest: Vec<Result<String, Error>> = keys.collect();
    let (last, produced) = rest.split_last().unwrap();
    let (kind, message) = remote(last);
    assert_eq!(kind, RemoteErrorKind::Runtime);
    assert!(
        message == "dictionary keys changed during iteration"
            || message == "dictionary changed size during iteration",
        "{message}"
    );
    assert!(
        produced.len() <= WINDOW as usize,
        "{} items",
        produced.len()
    );
    for (i, key) in produced.iter().enumerate() {
        assert_eq!(*key.as_ref().unwrap(), format!("k{}", i + 1));
    }
}

fn main() {
    manager::init();
    common::run_tests(vec![
        case!(a_list_iterates_in_order),
        case!(a_list_item_is_read_when_it_is_produced),
        case!(iterating_while_another_process_appends),
        case!(proxies_inside_items_arrive_usable),
        case!(dropping_the_stream_stops_the_server_iterator),
        case!(a_client_that_dies_mid_iteration_frees_the_iterator),
        case!(a_connection_that_closes_ends_the_stream),
        case!(a_dict_iterates_its_keys_in_order),
        case!(a_dict_that_changes_while_it_iterates_ends_the_stream),
    ]);
}
