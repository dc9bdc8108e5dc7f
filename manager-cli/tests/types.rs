//! `manager info --types` against servers of the tour's registries (`examples/tour.rs`): each
//! scenario's registry served in this process, the `manager` binary run against it. Run with
//! `--nocapture` to see the output.
#![allow(clippy::duplicate_mod)]
#![allow(dead_code, reason = "the examples' consumer halves are not run here")]
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

#[path = "../../examples/by_value.rs"]
mod by_value;
#[path = "../../examples/create_method.rs"]
mod create_method;
#[path = "../../examples/custom_proxy.rs"]
mod custom_proxy;
#[path = "../../examples/exposed.rs"]
mod exposed;
#[path = "../../examples/method_to_typeid.rs"]
mod method_to_typeid;
#[path = "../../examples/shared_class.rs"]
mod shared_class;
#[path = "../../examples/spawn_list.rs"]
mod spawn_list;

use std::process::{Command, Stdio};

use manager::{Address, AuthKey, Registry, Server, ServerConfig};

const BIN: &str = env!("CARGO_BIN_EXE_manager");
const KEY: &str = "types-test-key";

/// Serves `registry` in this process and returns what `manager info --types ARGS` prints.
fn info_types(registry: Registry, args: &[&str]) -> String {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let server = runtime
        .block_on(Server::bind(
            registry,
            &Address::tcp("127.0.0.1:0"),
            AuthKey::from(KEY),
            ServerConfig::default(),
        ))
        .expect("bind");
    let address = server.address().to_string();
    let stop = server.shutdown_handle();
    runtime.spawn(server.serve_forever());
    let output = Command::new(BIN)
        .args(["info", "--types", "--address", &address])
        .args(args)
        .env("MANAGER_AUTHKEY", KEY)
        .stdin(Stdio::null())
        .output()
        .expect("run manager");
    stop.shutdown();
    assert!(
        output.status.success(),
        "manager info --types failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

type Scenario = (&'static str, fn() -> manager::Result<Registry>);

const TOUR: &[Scenario] = &[
    ("exposed", exposed::registry),
    ("custom_proxy", custom_proxy::registry),
    ("create_method", create_method::registry),
    ("shared_class", shared_class::registry),
    ("method_to_typeid", method_to_typeid::registry),
    ("by_value", by_value::registry),
    ("spawn_list", spawn_list::registry),
];

#[test]
fn info_types_lists_the_tour_registries() {
    let mut all = String::new();
    for (name, registry) in TOUR {
        let text = info_types(registry().expect("the registry"), &[]);
        all.push_str(&format!("== {name}\n{text}\n"));
    }
    eprintln!("{all}");
    // exposed: only get_x, with its doc line, and nothing else.
    assert!(
        all.contains(
            "== exposed\nget_pair  (types::exposed::common::Pair)  create: one shared instance\n  \
             fn get_x(&self) -> i64\n      Returns `x`.\n\n"
        ),
        "{all}"
    );
    // create_method: no create method.
    assert!(
        all.contains(
            "== create_method\nget_pair  (types::create_method::common::Pair)  no create method"
        ),
        "{all}"
    );
    // shared_class: a factory, and `&mut self` setters with their parameters.
    assert!(
        all.contains("  fn set_x(&mut self, new_x: i64)\n      Sets `x`.\n"),
        "{all}"
    );
    // method_to_typeid: a typeid made only from results, and the mapping.
    assert!(
        all.contains("ItemWrapper  (types::method_to_typeid::ItemWrapper)  no create method"),
        "{all}"
    );
    assert!(
        all.contains(
            "  fn get_item(&self) -> Item => \"ItemWrapper\"\n      The item the pair holds; \
             mapped to `ItemWrapper`, so callers get a proxy.\n"
        ),
        "{all}"
    );
    // spawn_list: a built-in, with its typed errors; `append` is one of its quick methods.
    assert!(
        all.contains("  fn append(&mut self, item: Value) -> Result<(), RemoteError>  (quick)\n"),
        "{all}"
    );
}

#[test]
fn info_types_json_describes_each_method() {
    let text = info_types(
        method_to_typeid::registry().expect("the registry"),
        &["--json"],
    );
    let types: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let pair = types
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["typeid"] == "get_pair")
        .expect("get_pair");
    assert_eq!(pair["create_method"], true);
    assert_eq!(pair["source"], "shared");
    assert_eq!(pair["events"], serde_json::json!([]));
    let get_item = pair["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .find(|m| m["name"] == "get_item")
        .expect("get_item");
    assert_eq!(get_item["method_to_typeid"], "ItemWrapper");
    assert_eq!(get_item["receiver"], "&self");
    assert_eq!(get_item["is_async"], false);
    assert_eq!(get_item["returns"], "Item");
    let wrapper = types
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["typeid"] == "ItemWrapper")
        .expect("ItemWrapper");
    let set = &wrapper["methods"][0];
    assert_eq!(set["name"], "set_wrapped_item");
    assert_eq!(
        set["params"],
        serde_json::json!([{"name": "new_item", "ty": "String"}])
    );
    assert_eq!(set["doc"], "Changes the wrapped item.");
}

#[test]
fn info_types_lists_the_builtin_iteration_methods() {
    let text = info_types(manager::sync::registry(), &[]);
    let block = |typeid: &str| -> String {
        let start = text
            .find(&format!("\n{typeid}  ("))
            .unwrap_or_else(|| panic!("no {typeid} in:\n{text}"));
        let rest = &text[start + 1..];
        rest[..rest.find("\n\n").unwrap_or(rest.len())].to_string()
    };
    let list = block("list");
    assert!(
        list.contains("fn iter(&self) -> Stream<Value>\n      The items one by one, each read when it is produced (Python's `for x in list`)."),
        "{list}"
    );
    let dict = block("dict");
    assert!(dict.contains("fn iter(&self) -> Stream<Value>"), "{dict}");
    assert!(
        dict.contains("fn iter_items(&self) -> Stream<Value>"),
        "{dict}"
    );
    let iterator = block("Iterator");
    assert!(
        iterator.starts_with(
            "Iterator  (manager_core::sync::iterator::IteratorObject)  no create method"
        ),
        "{iterator}"
    );
    assert!(
        iterator.contains("fn next(&mut self) -> Result<Value, RemoteError>"),
        "{iterator}"
    );
}
