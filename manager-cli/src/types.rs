//! The readable form of `manager info --types`: each typeid with its Rust type, how it is
//! created, and its exposed methods as signatures, each with its doc summary below it.

use manager::describe::TypeInfo;

/// Renders `types` as text, ending with a newline.
pub(crate) fn render(types: &[TypeInfo]) -> String {
    let mut out = String::new();
    for (i, info) in types.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let create = match (info.create_method, info.source.as_str()) {
            (false, _) => "no create method".to_string(),
            (true, "shared") => "create: one shared instance".to_string(),
            (true, source) => match &info.params {
                Some(params) => format!("create: {source}({})", params.join(", ")),
                None => format!("create: {source}"),
            },
        };
        out.push_str(&format!(
            "{}  ({})  {create}\n",
            info.typeid, info.type_name
        ));
        for method in &info.methods {
            out.push_str(&format!("  {}\n", signature(method)));
            if !method.doc.is_empty() {
                out.push_str(&format!("      {}\n", method.doc));
            }
        }
        for event in &info.events {
            out.push_str(&format!(
                "  event {}: {}  // {}\n",
                event.name, event.ty, event.doc
            ));
        }
    }
    out
}

/// `async fn name(&self, a: i64) -> T => "Typeid"`, as the method reads in Rust.
fn signature(method: &manager::describe::MethodInfo) -> String {
    let mut params = vec![method.receiver.clone()];
    params.extend(method.params.iter().map(|p| {
        if p.ty.is_empty() {
            p.name.clone()
        } else {
            format!("{}: {}", p.name, p.ty)
        }
    }));
    let mut text = format!(
        "{}fn {}({})",
        if method.is_async { "async " } else { "" },
        method.name,
        params.join(", ")
    );
    if method.returns != "()" {
        text.push_str(&format!(" -> {}", method.returns));
    }
    if let Some(target) = &method.method_to_typeid {
        text.push_str(&format!(" => {target:?}"));
    }
    if method.quick {
        text.push_str("  (quick)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use manager::describe::{MethodInfo, ParamInfo};

    #[test]
    fn methods_read_as_signatures() {
        let types = vec![TypeInfo {
            typeid: "Pair".into(),
            type_name: "demo::Pair".into(),
            create_method: true,
            source: "factory".into(),
            params: None,
            methods: vec![
                MethodInfo {
                    name: "get_x".into(),
                    params: vec![],
                    returns: "i64".into(),
                    receiver: "&self".into(),
                    is_async: false,
                    quick: true,
                    method_to_typeid: None,
                    doc: "The x coordinate.".into(),
                },
                MethodInfo {
                    name: "wait".into(),
                    params: vec![ParamInfo {
                        name: "n".into(),
                        ty: "u32".into(),
                    }],
                    returns: "()".into(),
                    receiver: "&mut self".into(),
                    is_async: true,
                    quick: false,
                    method_to_typeid: Some("Item".into()),
                    doc: String::new(),
                },
            ],
            events: vec![],
        }];
        let expected = "\
Pair  (demo::Pair)  create: factory
  fn get_x(&self) -> i64  (quick)
      The x coordinate.
  async fn wait(&mut self, n: u32) => \"Item\"
";
        assert_eq!(render(&types), expected);
    }
}
