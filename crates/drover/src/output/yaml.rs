//! `-o yaml`: a small block-style YAML emitter for the JSON documents drover
//! prints. Strings are plain when YAML reads them back as the same string,
//! else double-quoted with JSON's escapes (which YAML's double-quoted style
//! shares).

use serde_json::Value;

/// `v` as a YAML document, ending in a newline.
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => block(v, 0, &mut out),
        Value::Array(a) if !a.is_empty() => block(v, 0, &mut out),
        _ => {
            out += &scalar(v);
            out.push('\n');
        }
    }
    out
}

/// A non-empty object or array, each line indented by `indent`.
fn block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push_str(&pad);
                out.push_str(&string(k));
                out.push(':');
                if is_block(v) {
                    out.push('\n');
                    block(v, indent + 2, out);
                } else {
                    out.push(' ');
                    out.push_str(&scalar(v));
                    out.push('\n');
                }
            }
        }
        Value::Array(a) => {
            for v in a {
                if is_block(v) {
                    // The nested block's first line, indented by two more,
                    // takes the dash in place of its indent.
                    let mut inner = String::new();
                    block(v, indent + 2, &mut inner);
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&inner[indent + 2..]);
                } else {
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&scalar(v));
                    out.push('\n');
                }
            }
        }
        _ => unreachable!("block of a scalar"),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// A scalar (or an empty collection) on one line.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// `s` plain when that reads back as the same string, else quoted.
fn string(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

fn plain_ok(s: &str) -> bool {
    const RESERVED: [&str; 14] = [
        "null", "~", "true", "false", "yes", "no", "on", "off", "y", "n", ".nan", ".inf", "-.inf",
        "<<",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || matches!(first, '/' | '_' | '.'))
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./@+=:~,# ".contains(c))
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with([':', ' '])
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
        && s.parse::<f64>().is_err()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_documents_in_block_style() {
        let doc = json!({
            "apiVersion": "drover/v1",
            "kind": "InstanceList",
            "items": [
                {"id": "abc", "port": 8080, "env": [], "labels": {}, "ok": true, "pid": null},
                {"id": "def", "cmd": ["sh", "-c", "echo hi"], "nested": {"a": [1, [2, 3]]}}
            ]
        });
        let want = "\
apiVersion: drover/v1
kind: InstanceList
items:
  - id: abc
    port: 8080
    env: []
    labels: {}
    ok: true
    pid: null
  - id: def
    cmd:
      - sh
      - \"-c\"
      - echo hi
    nested:
      a:
        - 1
        - - 2
          - 3
";
        assert_eq!(to_string(&doc), want);
    }

    #[test]
    fn strings_yaml_would_misread_are_quoted() {
        for s in [
            "",
            "true",
            "No",
            "null",
            "~",
            "123",
            "1.5",
            "1e3",
            "-x",
            "a: b",
            "a #b",
            "x:",
            " x",
            "2026-12-01T10:00:00Z",
            "line\nbreak",
            "*ref",
            "{x}",
            "'q'",
            "@at",
        ] {
            assert!(string(s).starts_with('"'), "{s:?} should be quoted");
        }
        for s in [
            "running",
            "sha256:abcd",
            "hello world",
            "drover/v1",
            "a=b",
            "web#1x",
        ] {
            assert_eq!(string(s), s, "{s:?} should be plain");
        }
        assert_eq!(string("line\nbreak"), "\"line\\nbreak\"");
        assert_eq!(to_string(&json!("x")), "x\n");
        assert_eq!(to_string(&json!([])), "[]\n");
    }
}
