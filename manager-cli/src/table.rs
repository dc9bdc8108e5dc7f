//! The readable form of `manager info`: a summary and aligned tables of the objects, the calls
//! running now and the calls made so far, per typeid and method.

use std::time::Duration;

use manager::DebugInfo;

/// Renders `info` as text, ending with a newline.
pub(crate) fn render(info: &DebugInfo) -> String {
    let mut out = String::new();
    out.push_str(&format!("server       {}\n", info.address));
    out.push_str(&format!(
        "connections  {} (including this one)\n",
        info.connections
    ));
    out.push_str(&format!("objects      {}\n", info.objects.len()));
    if !info.running.is_empty() {
        out.push_str(&format!("running      {} calls\n", info.running.len()));
    }
    let objects: Vec<Vec<String>> = info
        .objects
        .iter()
        .map(|o| {
            vec![
                o.id.to_string(),
                o.typeid.clone(),
                o.type_name.clone(),
                o.refcount.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        &["ID", "TYPEID", "TYPE", "REFCOUNT"],
        &[true, false, false, true],
        &objects,
    );
    let running: Vec<Vec<String>> = info
        .running
        .iter()
        .map(|call| {
            vec![
                call.object.to_string(),
                call.typeid.clone(),
                call.method.clone(),
                if call.is_async { "async" } else { "plain" }.to_string(),
                call.connection.to_string(),
                seconds(call.elapsed),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "RUNNING ON",
            "TYPEID",
            "METHOD",
            "KIND",
            "CONNECTION",
            "FOR",
        ],
        &[true, false, false, false, true, true],
        &running,
    );
    let methods: Vec<Vec<String>> = info
        .methods
        .iter()
        .map(|m| {
            vec![
                m.typeid.clone(),
                m.method.clone(),
                m.calls.to_string(),
                m.errors.to_string(),
                seconds(m.total),
                seconds(m.total.checked_div(m.calls as u32).unwrap_or_default()),
            ]
        })
        .collect();
    table(
        &mut out,
        &["TYPEID", "METHOD", "CALLS", "ERRORS", "TOTAL", "MEAN"],
        &[false, false, true, true, true, true],
        &methods,
    );
    out
}

/// A duration as seconds with three decimals (`0.004s`).
fn seconds(duration: Duration) -> String {
    format!("{:.3}s", duration.as_secs_f64())
}

/// Appends a blank line and an aligned table, unless it has no rows. `right` says which
/// columns are numbers (right-aligned).
fn table(out: &mut String, header: &[&str], right: &[bool], rows: &[Vec<String>]) {
    if rows.is_empty() {
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(right)
            .map(|((cell, &width), &right)| {
                if right {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        format!("{}\n", text.join("  ").trim_end())
    };
    out.push('\n');
    out.push_str(&line(header.to_vec()));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manager::wire::{MethodStats, RunningCall};
    use manager::{Address, ObjectInfo};

    #[test]
    fn columns_line_up() {
        let info = DebugInfo {
            objects: vec![
                ObjectInfo {
                    id: 1,
                    typeid: "list".into(),
                    type_name: "a::List".into(),
                    refcount: 12,
                },
                ObjectInfo {
                    id: 10,
                    typeid: "Namespace".into(),
                    type_name: "b::Ns".into(),
                    refcount: 1,
                },
            ],
            connections: 2,
            address: Address::tcp("127.0.0.1:5000"),
            running: vec![],
            methods: vec![],
        };
        let text = render(&info);
        let expected = "\
server       127.0.0.1:5000
connections  2 (including this one)
objects      2

ID  TYPEID     TYPE     REFCOUNT
 1  list       a::List        12
10  Namespace  b::Ns           1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn running_calls_and_method_statistics() {
        let info = DebugInfo {
            objects: vec![],
            connections: 3,
            address: Address::tcp("127.0.0.1:5000"),
            running: vec![RunningCall {
                typeid: "Pair".into(),
                method: "slow".into(),
                object: 7,
                connection: 2,
                is_async: false,
                elapsed: Duration::from_millis(2500),
            }],
            methods: vec![MethodStats {
                typeid: "Pair".into(),
                method: "get_x".into(),
                calls: 4,
                errors: 1,
                total: Duration::from_millis(8),
            }],
        };
        let expected = "\
server       127.0.0.1:5000
connections  3 (including this one)
objects      0
running      1 calls

RUNNING ON  TYPEID  METHOD  KIND   CONNECTION     FOR
         7  Pair    slow    plain           2  2.500s

TYPEID  METHOD  CALLS  ERRORS   TOTAL    MEAN
Pair    get_x       4       1  0.008s  0.002s
";
        assert_eq!(render(&info), expected);
    }

    #[test]
    fn no_objects_no_table() {
        let info = DebugInfo {
            objects: vec![],
            connections: 1,
            address: Address::unix("/tmp/m.sock"),
            running: vec![],
            methods: vec![],
        };
        assert_eq!(
            render(&info),
            "server       unix:/tmp/m.sock\nconnections  1 (including this one)\nobjects      0\n"
        );
    }
}
