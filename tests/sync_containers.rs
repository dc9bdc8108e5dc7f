//! The built-in containers (list, dict, Namespace, Value, Array) across real sockets and
//! processes: Python's semantics, typed clients over stored values, nesting (a proxy inside a
//! container) and proxies passed to other processes.

#[macro_use]
mod common;

use common::{wait_until, ChildGuard, InProcessServer};
use manager::sync::{DictBlockingProxy, ListBlockingProxy};
use manager::{Address, BaseManager, Error, Process, Proxy as _, RemoteErrorKind};
use serde::{Deserialize, Serialize};

fn server() -> InProcessServer {
    InProcessServer::tcp(manager::sync::registry())
}

fn kind(error: Error) -> RemoteErrorKind {
    error
        .remote_kind()
        .unwrap_or_else(|| panic!("expected a remote error, got {error}"))
}

/// Polls until the server holds `n` objects.
fn wait_objects(manager: &manager::BlockingManager, n: u64) {
    wait_until(&format!("{n} objects"), || {
        match manager.number_of_objects() {
            Ok(count) if count == n => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

fn list_follows_python_semantics() {
    let server = server();
    let manager = server.connect();
    let list = manager.list(&[1i64, 2, 3]).unwrap();
    list.append(&4).unwrap();
    list.extend(&[5, 6]).unwrap();
    list.insert(0, &0).unwrap();
    list.insert(-1, &55).unwrap();
    assert_eq!(list.to_vec().unwrap(), vec![0, 1, 2, 3, 4, 5, 55, 6]);
    assert_eq!(list.len().unwrap(), 8);
    assert_eq!(list.get(-1).unwrap(), 6);
    assert_eq!(list.get(1).unwrap(), 1);
    assert_eq!(kind(list.get(8).unwrap_err()), RemoteErrorKind::Index);
    assert_eq!(kind(list.get(-9).unwrap_err()), RemoteErrorKind::Index);
    list.set(-2, &5).unwrap();
    assert_eq!(list.count(&5).unwrap(), 2);
    assert_eq!(list.index(&5).unwrap(), 5);
    assert_eq!(
        kind(list.index(&99).unwrap_err()),
        RemoteErrorKind::InvalidValue
    );
    list.remove(&5).unwrap();
    assert_eq!(list.to_vec().unwrap(), vec![0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(
        kind(list.remove(&99).unwrap_err()),
        RemoteErrorKind::InvalidValue
    );
    assert_eq!(list.pop().unwrap(), 6);
    assert_eq!(list.pop_at(0).unwrap(), 0);
    assert_eq!(list.slice(Some(1), Some(-1)).unwrap(), vec![2, 3, 4]);
    assert_eq!(list.slice(None, Some(2)).unwrap(), vec![1, 2]);
    assert_eq!(list.slice(Some(10), None).unwrap(), Vec::<i64>::new());
    list.set_slice(Some(1), Some(3), &[20, 30, 40]).unwrap();
    assert_eq!(list.to_vec().unwrap(), vec![1, 20, 30, 40, 4, 5]);
    list.delete_slice(Some(-2), None).unwrap();
    list.delete(0).unwrap();
    assert_eq!(list.to_vec().unwrap(), vec![20, 30, 40]);
    assert!(list.contains(&30).unwrap());
    assert!(!list.contains(&31).unwrap());
    list.reverse().unwrap();
    assert_eq!(list.to_vec().unwrap(), vec![40, 30, 20]);
    list.extend(&[35, 5]).unwrap();
    list.sort(false).unwrap();
    assert_eq!(list.to_vec().unwrap(), vec![5, 20, 30, 35, 40]);
    list.sort(true).unwrap();
    assert_eq!(list.to_vec().unwrap(), vec![40, 35, 30, 20, 5]);
    list.clear().unwrap();
    assert!(list.is_empty().unwrap());
    assert_eq!(kind(list.pop().unwrap_err()), RemoteErrorKind::Index);
}

fn dict_follows_python_semantics() {
    let server = server();
    let manager = server.connect();
    let dict = manager.dict(&[("a".to_string(), 1i64)]).unwrap();
    assert_eq!(dict.insert(&"b".into(), &2).unwrap(), None);
    assert_eq!(dict.insert(&"a".into(), &10).unwrap(), Some(1));
    assert_eq!(dict.get(&"a".into()).unwrap(), Some(10));
    assert_eq!(dict.get(&"zz".into()).unwrap(), None);
    assert_eq!(dict.get_item(&"b".into()).unwrap(), 2);
    assert_eq!(
        kind(dict.get_item(&"zz".into()).unwrap_err()),
        RemoteErrorKind::Key
    );
    assert!(dict.contains_key(&"b".into()).unwrap());
    dict.update(&[("c".into(), 3), ("d".into(), 4)]).unwrap();
    assert_eq!(
        dict.keys().unwrap(),
        vec!["a", "b", "c", "d"],
        "insertion order"
    );
    assert_eq!(dict.values().unwrap(), vec![10, 2, 3, 4]);
    assert_eq!(dict.setdefault(&"e".into(), &5).unwrap(), 5);
    assert_eq!(dict.setdefault(&"e".into(), &50).unwrap(), 5);
    assert_eq!(dict.popitem().unwrap(), ("e".to_string(), 5));
    assert_eq!(dict.pop(&"c".into()).unwrap(), 3);
    assert_eq!(
        kind(dict.pop(&"c".into()).unwrap_err()),
        RemoteErrorKind::Key
    );
    assert_eq!(dict.remove(&"d".into()).unwrap(), Some(4));
    assert_eq!(dict.remove(&"d".into()).unwrap(), None);
    assert_eq!(
        dict.items().unwrap(),
        vec![("a".to_string(), 10), ("b".to_string(), 2)]
    );
    assert_eq!(dict.len().unwrap(), 2);
    dict.clear().unwrap();
    assert!(dict.is_empty().unwrap());
    assert_eq!(kind(dict.popitem().unwrap_err()), RemoteErrorKind::Key);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Settings {
    name: String,
    retries: u32,
    ratio: f64,
    tags: Vec<String>,
}

fn namespace_value_and_array_hold_any_serde_type() {
    let server = server();
    let manager = server.connect();
    let ns = manager.namespace().unwrap();
    let settings = Settings {
        name: "run".into(),
        retries: 3,
        ratio: 0.5,
        tags: vec!["a".into()],
    };
    ns.set("settings", &settings).unwrap();
    ns.set("count", &7u8).unwrap();
    assert_eq!(ns.get::<Settings>("settings").unwrap(), settings);
    assert_eq!(
        ns.get::<u64>("count").unwrap(),
        7,
        "an int reads as any int type"
    );
    assert_eq!(ns.names().unwrap(), vec!["settings", "count"]);
    assert!(ns.has("count").unwrap());
    ns.del("count").unwrap();
    assert_eq!(
        kind(ns.get::<u8>("count").unwrap_err()),
        RemoteErrorKind::Attribute
    );
    assert_eq!(
        kind(ns.del("count").unwrap_err()),
        RemoteErrorKind::Attribute
    );

    let value = manager.value(&settings).unwrap();
    assert_eq!(value.get().unwrap(), settings);
    let changed = Settings {
        retries: 4,
        ..settings.clone()
    };
    value.set(&changed).unwrap();
    assert_eq!(value.get().unwrap(), changed);

    let array = manager.array(&[1.5f64, 2.5, 3.5]).unwrap();
    array.set(-1, &4.5).unwrap();
    assert_eq!(array.get(2).unwrap(), 4.5);
    assert_eq!(array.to_vec().unwrap(), vec![1.5, 2.5, 4.5]);
    assert_eq!(kind(array.get(3).unwrap_err()), RemoteErrorKind::Index);
    array.assign(&[0.0, 0.0, 0.0]).unwrap();
    assert_eq!(
        kind(array.assign(&[1.0]).unwrap_err()),
        RemoteErrorKind::InvalidValue,
        "an array's length is fixed"
    );
    assert_eq!(array.len().unwrap(), 3);
}

fn reading_with_the_wrong_type_is_a_decode_error_for_that_caller_only() {
    let server = server();
    let manager = server.connect();
    let words = manager
        .list(&["one".to_string(), "two".to_string()])
        .unwrap();
    // Another client, with another idea of the element type, shares the same list.
    let numbers: ListBlockingProxy<i64> = manager
        .create_dynamic("list", (Vec::<manager::value::Value>::new(),))
        .map(manager::Proxy::from_base)
        .unwrap();
    numbers.append(&3).unwrap();
    let same_list_as_numbers: ListBlockingProxy<i64> =
        manager::Proxy::from_base(words.base().clone());
    match same_list_as_numbers.get(0) {
        Err(Error::Decode { what, message }) => {
            assert!(what.contains("i64"), "{what}");
            assert!(message.contains("invalid type"), "{message}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    // The list and the server are untouched.
    assert_eq!(words.to_vec().unwrap(), vec!["one", "two"]);
    assert_eq!(numbers.to_vec().unwrap(), vec![3]);
}

fn a_proxy_stored_in_a_container_keeps_its_object_alive() {
    let server = server();
    let manager = server.connect();
    let registry: DictBlockingProxy<String, ListBlockingProxy<String>> = manager.dict(&[]).unwrap();
    let jobs = manager.list(&["first".to_string()]).unwrap();
    registry.insert(&"jobs".into(), &jobs).unwrap();
    drop(jobs);
    // The dict holds the only reference to the list now.
    let info = manager.debug_info().unwrap();
    assert_eq!(info.objects.len(), 2, "{info:?}");
    let list_info = info.objects.iter().find(|o| o.typeid == "list").unwrap();
    assert_eq!(list_info.refcount, 1, "held by the dict: {info:?}");

    let jobs = registry.get(&"jobs".into()).unwrap().expect("stored");
    jobs.append(&"second".into()).unwrap();
    assert_eq!(jobs.to_vec().unwrap(), vec!["first", "second"]);
    drop(jobs);

    // Removing it from the dict (and dropping what came back) frees the list.
    let removed = registry.remove(&"jobs".into()).unwrap();
    assert!(removed.is_some());
    drop(removed);
    wait_objects(&manager, 1);

    // A list holding a proxy to an object that does not exist is refused.
    let ghost = manager.list(&[0i64]).unwrap();
    let ghost_base = ghost.base().clone();
    let ghost_id = ghost_base.token().id;
    drop(ghost);
    drop(ghost_base);
    wait_objects(&manager, 1);
    let forged = manager::Token {
        typeid: "list".into(),
        address: manager.connection().server_address().clone(),
        id: ghost_id,
        instance: 0,
    };
    let values: ListBlockingProxy<manager::value::Value> = manager.list(&[]).unwrap();
    let error = values
        .append(&manager::value::Value::Proxy(forged))
        .unwrap_err();
    assert_eq!(kind(error), RemoteErrorKind::InvalidValue);
}

#[manager::entry]
fn append_from_child(address: Address, jobs: DictBlockingProxy<String, ListBlockingProxy<String>>) {
    let _ = address;
    let list = jobs
        .get(&"jobs".into())
        .expect("read the dict")
        .expect("the list is there");
    list.append(&format!("from {}", manager::current_process_name()))
        .expect("append");
}

fn a_proxy_taken_out_of_a_container_works_in_another_process() {
    let server = server();
    let manager = server.connect();
    let jobs: DictBlockingProxy<String, ListBlockingProxy<String>> = manager.dict(&[]).unwrap();
    jobs.insert(&"jobs".into(), &manager.list(&[]).unwrap())
        .unwrap();
    let mut child = ChildGuard(
        Process::spawn_with_name(
            append_from_child,
            (server.address().clone(), jobs.clone()),
            "worker-7",
        )
        .unwrap(),
    );
    // The child holds its own reference: dropping ours right away must not free the dict.
    drop(jobs);
    assert!(child.join().success());
    // Only the objects still referenced remain: none, once our proxies are gone.
    wait_objects(&manager, 0);
}

#[manager::entry]
fn read_list_after_parent_dropped(list: ListBlockingProxy<i64>) -> manager::Result<()> {
    assert_eq!(list.to_vec()?, vec![1, 2, 3]);
    list.append(&4)?;
    Ok(())
}

fn a_proxy_passed_to_a_process_stays_valid_after_the_parent_drops_it() {
    let server = server();
    let observer = server.connect();
    let list = observer.list(&[1i64, 2, 3]).unwrap();
    let list_id = list.base().token().id;
    let reader = server.connect();
    let probe: ListBlockingProxy<i64> = reader.attach(list.base().token()).unwrap();
    let mut child = ChildGuard(Process::spawn(read_list_after_parent_dropped, (list,)).unwrap());
    // `list` moved into the spawn and is gone here; the child attached before spawn returned.
    assert!(child.join().success());
    assert_eq!(probe.to_vec().unwrap(), vec![1, 2, 3, 4]);
    drop(probe);
    wait_until("the list to be freed", || {
        let info = observer.debug_info().map_err(|e| e.to_string())?;
        if info.objects.iter().any(|o| o.id == list_id) {
            Err(format!("{info:?}"))
        } else {
            Ok(())
        }
    });
}

fn python_typeids_are_served() {
    use manager::value::Value;
    let server = server();
    let manager = BaseManager::new(server.address().clone())
        .authkey(server.authkey().clone())
        .connect()
        .unwrap();
    // Created by name with the arguments Python's SyncManager passes.
    let made = [
        manager.create_dynamic("list", (vec![Value::Int(1)],)),
        manager.create_dynamic("dict", (vec![(Value::Str("k".into()), Value::Int(1))],)),
        manager.create_dynamic("Namespace", (Vec::<(String, Value)>::new(),)),
        manager.create_dynamic("Value", (Value::Float(0.5),)),
        manager.create_dynamic("Array", (vec![Value::Int(1), Value::Int(2)],)),
    ];
    let typeids: Vec<String> = made
        .into_iter()
        .map(|proxy| proxy.unwrap().token().typeid.clone())
        .collect();
    assert_eq!(typeids, ["list", "dict", "Namespace", "Value", "Array"]);
    let unknown = manager.create_dynamic("nope", ()).unwrap_err();
    assert_eq!(kind(unknown), RemoteErrorKind::UnknownTypeid);
}

fn main() {
    manager::init();
    common::quiet_intentional_panics();
    common::run_tests(vec![
        case!(list_follows_python_semantics),
        case!(dict_follows_python_semantics),
        case!(namespace_value_and_array_hold_any_serde_type),
        case!(reading_with_the_wrong_type_is_a_decode_error_for_that_caller_only),
        case!(a_proxy_stored_in_a_container_keeps_its_object_alive),
        case!(a_proxy_taken_out_of_a_container_works_in_another_process),
        case!(a_proxy_passed_to_a_process_stays_valid_after_the_parent_drops_it),
        case!(python_typeids_are_served),
        case!(factories_and_methods_return_built_in_containers),
    ]);
}

/// A user's type whose methods hand out built-in containers (`method_to_typeid` to the
/// built-in typeids), beside factories that return them: the seed's `top_level_function`.
#[derive(Debug)]
pub struct Board {
    name: String,
}

#[manager::shared(method_to_typeid = { tasks: "list", scores: "dict", inbox: "Queue" })]
impl Board {
    /// A new list of this board's tasks.
    pub fn tasks(&self) -> manager::sync::ListObject {
        manager::sync::ListObject::from_items([format!("{}: first", self.name)]).unwrap()
    }

    /// A new dict of scores.
    pub fn scores(&self) -> manager::sync::DictObject {
        manager::sync::DictObject::from_items([("a".to_string(), 1i64), ("b".to_string(), 2)])
            .unwrap()
    }

    /// A new queue, at most two items.
    pub fn inbox(&self) -> manager::sync::QueueObject {
        manager::sync::QueueObject::queue(2)
    }
}

fn factories_and_methods_return_built_in_containers() {
    use manager::sync::QueueBlockingProxy;
    use manager::{Register, Typeid};

    let mut registry = manager::sync::registry();
    registry
        .register(Register::shared("board", Board { name: "ops".into() }))
        .unwrap();
    registry
        .register(Register::factory("get_my_items", |(): ()| {
            manager::sync::ListObject::from_items(["set by the server"]).unwrap()
        }))
        .unwrap();
    let server = InProcessServer::tcp(registry);
    let manager = server.connect();

    // A factory's list, with the list's own proxy type (Python's `proxytype=ListProxy`).
    const GET_MY_ITEMS: Typeid<ListBlockingProxy<String>> = Typeid::new("get_my_items");
    let items = manager.create(&GET_MY_ITEMS, ()).unwrap();
    items.append(&"appended".to_string()).unwrap();
    assert_eq!(
        items.to_vec().unwrap(),
        vec!["set by the server".to_string(), "appended".to_string()]
    );

    // A method's list, dict and queue, each a new server-side object.
    const BOARD: Typeid<BoardBlockingProxy> = Typeid::new("board");
    let board = manager.create(&BOARD, ()).unwrap();
    let tasks: ListBlockingProxy<String> = board.tasks().unwrap();
    tasks.append(&"second".to_string()).unwrap();
    assert_eq!(tasks.len().unwrap(), 2);
    let scores: DictBlockingProxy<String, i64> = board.scores().unwrap();
    assert_eq!(scores.get(&"b".to_string()).unwrap(), Some(2));
    let inbox: QueueBlockingProxy<String> = board.inbox().unwrap();
    inbox.put(&"one".to_string()).unwrap();
    inbox.put(&"two".to_string()).unwrap();
    assert!(
        !inbox.put_nowait(&"three".to_string()).unwrap(),
        "maxsize 2"
    );
    assert_eq!(inbox.get().unwrap(), "one");

    // A list made outside a call cannot hold proxies: the error says why.
    let error = manager::sync::ListObject::from_items([items.clone()]).unwrap_err();
    assert!(error.to_string().contains("cannot hold proxies"), "{error}");

    // Dropping the proxies frees what the methods made (the board and the factory's list
    // stay: the board is shared, the list is held by `items`).
    drop((tasks, scores, inbox));
    wait_objects(&manager, 2);
}
