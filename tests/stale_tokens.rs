//! Tokens name their server's run: after a server restarts on the same address, object ids
//! start again and a token of the earlier run would name another client's object. Such tokens
//! are refused, with an error that says why, however they arrive: attached by a client, stored
//! in a container, or passed to a spawned process. A token of the right run but the wrong
//! typeid is refused too.
//!
//! This binary spawns processes by re-running itself, so it has its own `main`
//! (`harness = false`) that calls `manager::init()` first.

#[macro_use]
mod common;

use common::InProcessServer;
use manager::sync::{DictBlockingProxy, ListBlockingProxy, QueueBlockingProxy};
use manager::{Address, Error, Process, Proxy, RemoteErrorKind, Token};

/// The error of a refused stale token, and that it says what happened.
fn expect_stale<T: std::fmt::Debug>(result: manager::Result<T>, says: &str) {
    match result {
        Err(e) if e.remote_kind() == Some(RemoteErrorKind::StaleToken) => {
            assert!(e.to_string().contains(says), "{says:?} is not in {e}");
        }
        other => panic!("expected a stale-token error saying {says:?}, got {other:?}"),
    }
}

/// In a spawned child: reads the list it was given.
#[manager::entry]
fn read_list(list: ListBlockingProxy<i64>) -> manager::Result<()> {
    list.to_vec()?;
    Ok(())
}

fn token_of<P: Proxy>(proxy: &P) -> Token {
    proxy.base().token().clone()
}

fn a_token_of_an_earlier_run_is_refused_after_a_restart() {
    let key = manager::process::authkey();
    let first =
        InProcessServer::start(manager::sync::registry(), Address::local_tcp(), key.clone());
    let address = first.address().clone();
    let old_client = first.connect();
    let old_list: ListBlockingProxy<i64> = old_client.list(&[1, 2, 3]).unwrap();
    let old_queue: QueueBlockingProxy<i64> = old_client.queue(0).unwrap();
    let (old_list_token, old_queue_token) = (token_of(&old_list), token_of(&old_queue));
    drop(first);

    // The same address, a new run: its first objects get the ids the first run's had.
    let second = InProcessServer::start(manager::sync::registry(), address.clone(), key);
    let client = second.connect();
    let list: ListBlockingProxy<i64> = client.list(&[10]).unwrap();
    let dict: DictBlockingProxy<String, i64> = client.dict(&[]).unwrap();
    assert_eq!(
        token_of(&list).id,
        old_list_token.id,
        "ids restart each run"
    );
    assert_eq!(
        token_of(&dict).id,
        old_queue_token.id,
        "ids restart each run"
    );
    assert_ne!(token_of(&list).instance, old_list_token.instance);

    // Attached by a client: refused, not an old list token appended into someone else's list,
    // nor an old queue token come back as a proxy onto a dict.
    expect_stale(
        client.attach::<ListBlockingProxy<i64>>(&old_list_token),
        "earlier run of the server",
    );
    expect_stale(
        client.attach::<QueueBlockingProxy<i64>>(&old_queue_token),
        "the server restarted",
    );
    assert_eq!(
        list.to_vec().unwrap(),
        vec![10],
        "the new list is untouched"
    );
    assert!(dict.is_empty().unwrap());

    // Of this run but another typeid: refused by the typeid check.
    let mut wrong_type = token_of(&dict);
    wrong_type.typeid = "Queue".into();
    expect_stale(
        client.attach::<QueueBlockingProxy<i64>>(&wrong_type),
        "not the Queue",
    );
    // Of this run and typeid: attached as before.
    let again: ListBlockingProxy<i64> = client.attach(&token_of(&list)).unwrap();
    again.append(&11).unwrap();
    assert_eq!(list.to_vec().unwrap(), vec![10, 11]);

    // Stored in a container of the new run: refused.
    let holder: ListBlockingProxy<ListBlockingProxy<i64>> = client.list(&[]).unwrap();
    match holder.append(&old_list) {
        Err(e) => assert!(e.to_string().contains("earlier run"), "{e}"),
        Ok(()) => panic!("a container of the new run stored a proxy of the old one"),
    }
    assert_eq!(holder.len().unwrap(), 0);

    // Passed to a spawned process, which reconnects to the same address: refused, saying so.
    match Process::spawn(read_list, (old_list.clone(),)) {
        Err(Error::Process(why)) => assert!(why.contains("earlier run"), "{why}"),
        other => panic!("expected the child to refuse a stale proxy, got {other:?}"),
    }
    let info = client.debug_info().unwrap();
    assert_eq!(info.objects.len(), 3, "nothing leaked: {info:?}");
}

fn main() {
    manager::init();
    common::run_tests(vec![case!(
        a_token_of_an_earlier_run_is_refused_after_a_restart
    )]);
}
