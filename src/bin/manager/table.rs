//! The readable form of `manager info`: a summary and an aligned table of the objects.

use manager::DebugInfo;

/// Renders `info` as text, ending with a newline.
pub fn render(info: &DebugInfo) -> String {
    let mut out = String::new();
    out.push_str(&format!("server       {}\n", info.address));
    out.push_str(&format!(
        "connections  {} (including this one)\n",
        info.connections
    ));
    out.push_str(&format!("objects      {}\n", info.objects.len()));
    if info.objects.is_empty() {
        return out;
    }
    let header = ["ID", "TYPEID", "TYPE", "REFCOUNT"];
    let rows: Vec<[String; 4]> = info
        .objects
        .iter()
        .map(|o| {
            [
                o.id.to_string(),
                o.typeid.clone(),
                o.type_name.clone(),
                o.refcount.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    // Numbers (the first and last columns) are right-aligned, names left-aligned.
    let line = |cells: [&str; 4]| {
        let text = format!(
            "{:>w0$}  {:<w1$}  {:<w2$}  {:>w3$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        format!("{}\n", text.trim_end())
    };
    out.push('\n');
    out.push_str(&line(header));
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn no_objects_no_table() {
        let info = DebugInfo {
            objects: vec![],
            connections: 1,
            address: Address::unix("/tmp/m.sock"),
        };
        assert_eq!(
            render(&info),
            "server       unix:/tmp/m.sock\nconnections  1 (including this one)\nobjects      0\n"
        );
    }
}
