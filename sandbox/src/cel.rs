//! CEL for `x-kubernetes-validations`: compiled once per rule text, evaluated with `self` (and `oldSelf` for
//! transition rules) bound to the JSON value at the rule's schema node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cel::{Context, Env, Program};
use serde_json::Value;

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // The Kubernetes CEL environment includes the strings and lists extension libraries.
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        let _ = env.add_extension(cel::extensions::math);
        Arc::new(env)
    })
    .clone()
}

/// A compiled rule.
#[derive(Clone)]
pub struct Rule {
    program: Arc<Program>,
    /// Whether the rule reads `oldSelf` (a transition rule).
    pub uses_old_self: bool,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("uses_old_self", &self.uses_old_self)
            .finish()
    }
}

/// Compile (cached by text). The error is the compiler's message.
pub fn compile(text: &str) -> Result<Rule, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Result<Rule, String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(text).cloned()) {
        return hit;
    }
    // The parser recurses per nesting level: refuse what could exhaust a thread's stack (not catchable).
    let mut depth = 0usize;
    let mut max_depth = 0usize;
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if max_depth > 64 || text.len() > 16_384 {
        return Err("compilation failed: the expression is too long or too deeply nested (limits: 16384 characters, 64 levels)".into());
    }
    let text_owned = text.to_string();
    // The parser must never take the emulator down, whatever a CRD author writes.
    let compiled = std::panic::catch_unwind(move || env().compile(&text_owned))
        .map_err(|_| "compilation failed: the CEL parser gave up on this expression".to_string())
        .and_then(|r| r.map_err(|e| format!("compilation failed: {e}")))
        .map(|program| {
            let uses_old_self = program.references().has_variable("oldSelf");
            Rule {
                program: Arc::new(program),
                uses_old_self,
            }
        });
    if let Ok(mut c) = cache.lock() {
        c.insert(text.to_string(), compiled.clone());
    }
    compiled
}

/// Field selections on `self`/`oldSelf` that the schema does not declare: the real server refuses such rules
/// when the CRD is created (`undefined field 'x'`).
pub fn undefined_fields(rule: &Rule, schema: &Value, root: bool) -> Vec<String> {
    use cel::common::ast::{EntryExpr, Expr, IdedExpr};
    fn chain(e: &IdedExpr) -> Option<(String, Vec<String>)> {
        match &e.expr {
            Expr::Ident(name) => Some((name.clone(), vec![])),
            Expr::Select(sel) => {
                let (root, mut fields) = chain(&sel.operand)?;
                fields.push(sel.field.clone());
                Some((root, fields))
            }
            _ => None,
        }
    }
    fn resolve<'a>(schema: &'a Value, field: &str, root: bool) -> Result<Option<&'a Value>, ()> {
        let embedded = schema
            .get("x-kubernetes-embedded-resource")
            .and_then(Value::as_bool)
            == Some(true);
        if (root || embedded) && matches!(field, "apiVersion" | "kind" | "metadata") {
            return Ok(None);
        }
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some((_, child)) = property(schema, field) {
            return Ok(Some(child));
        }
        if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            return Ok(Some(additional));
        }
        let free = schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true);
        if free || (props.is_none() && schema.get("type").and_then(Value::as_str) == Some("object")) {
            return Ok(None);
        }
        Err(())
    }
    fn walk(e: &IdedExpr, schema: &Value, root: bool, out: &mut Vec<String>) {
        match &e.expr {
            Expr::Select(sel) => {
                if let Some((var, fields)) = chain(e) {
                    if var == "self" || var == "oldSelf" {
                        let mut cur = Some(schema);
                        for (i, f) in fields.iter().enumerate() {
                            let Some(s) = cur else { break };
                            match resolve(s, f, root && i == 0) {
                                Ok(next) => cur = next,
                                Err(()) => {
                                    out.push(f.clone());
                                    break;
                                }
                            }
                        }
                        return;
                    }
                }
                walk(&sel.operand, schema, root, out);
            }
            Expr::Call(call) => {
                if let Some(t) = &call.target {
                    walk(t, schema, root, out);
                }
                for a in &call.args {
                    walk(a, schema, root, out);
                }
            }
            Expr::Comprehension(c) => {
                for x in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    walk(x, schema, root, out);
                }
            }
            Expr::List(l) => {
                for x in &l.elements {
                    walk(x, schema, root, out);
                }
            }
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        walk(&me.key, schema, root, out);
                        walk(&me.value, schema, root, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(rule.program.expression(), schema, root, &mut out);
    out
}

/// JSON to a CEL value: integers as `int`, objects as maps with string keys.
pub fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: HashMap<cel::objects::Key, cel::Value> = m
                .iter()
                .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

/// Words the CEL grammar reserves; a property with one of these names is reached as `__{word}__`.
const RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The CEL field name of a schema property, escaped as Kubernetes does (`__` -> `__underscores__`, `.` ->
/// `__dot__`, `-` -> `__dash__`, `/` -> `__slash__`, a reserved word `w` -> `__w__`). `None` when rules cannot
/// reach the property at all: an empty name, one starting with a digit, or one with any character other than
/// ASCII letters, digits, `_`, `.`, `-` and `/`.
pub fn escape(name: &str) -> Option<String> {
    let first = name.chars().next()?;
    if first.is_ascii_digit() {
        return None;
    }
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("__") {
            out.push_str("__underscores__");
            rest = &rest[2..];
            continue;
        }
        match c {
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(out)
}

/// The schema property that the CEL field `field` names (the inverse of [`escape`]).
fn property<'a>(schema: &'a Value, field: &str) -> Option<(&'a String, &'a Value)> {
    schema
        .get("properties")
        .and_then(Value::as_object)?
        .iter()
        .find(|(k, _)| escape(k).as_deref() == Some(field))
}

/// JSON to a CEL value as a rule sees it at a schema node (`root`: the node is the object's root): object
/// properties under their escaped names, only declared properties visible (an object with
/// `x-kubernetes-preserve-unknown-fields` and no properties is empty), maps (`additionalProperties`) with their
/// own keys, `number` fields as doubles. The root and embedded resources also show `apiVersion`, `kind` and
/// `metadata.name`/`generateName`, whatever their schema declares. Nodes without a `type` pass as they are.
pub fn bind(v: &Value, schema: &Value, root: bool) -> cel::Value {
    let embedded = schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true);
    bind_node(v, schema, root || embedded)
}

fn bind_node(v: &Value, schema: &Value, type_meta: bool) -> cel::Value {
    let ty = if type_meta {
        Some("object")
    } else {
        schema.get("type").and_then(Value::as_str)
    };
    match (ty, v) {
        (Some("object"), Value::Object(m)) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let mut map: HashMap<cel::objects::Key, cel::Value> = HashMap::new();
            for (k, child) in m {
                let entry = match (k.as_str(), props, additional) {
                    ("apiVersion" | "kind", _, _) if type_meta => {
                        child.is_string().then(|| (k.clone(), to_cel(child)))
                    }
                    ("metadata", _, _) if type_meta => {
                        let mut meta = serde_json::Map::new();
                        for f in ["name", "generateName"] {
                            if let Some(s) = child.get(f).filter(|s| s.is_string()) {
                                meta.insert(f.to_string(), s.clone());
                            }
                        }
                        Some((k.clone(), to_cel(&Value::Object(meta))))
                    }
                    (_, Some(p), _) => p.get(k).and_then(|s| Some((escape(k)?, bind(child, s, false)))),
                    (_, None, Some(a)) => Some((k.clone(), bind(child, a, false))),
                    (_, None, None) => None,
                };
                if let Some((name, value)) = entry {
                    map.insert(cel::objects::Key::String(Arc::new(name)), value);
                }
            }
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
        (Some("array"), Value::Array(items)) => match schema.get("items") {
            Some(item_schema) => cel::Value::List(Arc::new(
                items.iter().map(|i| bind(i, item_schema, false)).collect(),
            )),
            None => to_cel(v),
        },
        (Some("number"), Value::Number(n)) => cel::Value::Float(n.as_f64().unwrap_or_default()),
        _ => to_cel(v),
    }
}

/// The result of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The rule holds.
    Pass,
    /// The rule evaluated to false.
    Fail,
    /// The rule could not be evaluated (type error, missing field without `has()`).
    Error(String),
}

/// Evaluate a rule with `self` (and `oldSelf`) bound to values from [`bind`].
pub fn eval(rule: &Rule, self_value: cel::Value, old_self: Option<cel::Value>) -> Outcome {
    let env = env();
    let program = rule.program.clone();
    let run = move || {
        let mut ctx = Context::with_env(env);
        kubernetes_library(&mut ctx);
        ctx.add_variable_from_value("self", self_value);
        if let Some(old) = old_self {
            ctx.add_variable_from_value("oldSelf", old);
        }
        program.execute(&ctx).map_err(|e| e.to_string())
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(cel::Value::Bool(true))) => Outcome::Pass,
        Ok(Ok(cel::Value::Bool(false))) => Outcome::Fail,
        Ok(Ok(other)) => Outcome::Error(format!("rule did not evaluate to a bool: {other:?}")),
        Ok(Err(e)) => Outcome::Error(e),
        Err(_) => Outcome::Error("the CEL interpreter failed on this rule".into()),
    }
}

/// Functions of the Kubernetes CEL library that CRDs use in validation rules.
fn kubernetes_library(ctx: &mut Context<'_, '_>) {
    let _ = ctx.add_function("isURL", |s: Arc<String>| {
        let s = s.as_str();
        s.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !rest.is_empty()
                && !s.contains(' ')
        }) || (s.starts_with('/') && !s.contains(' '))
    });
    let _ = ctx.add_function("isQuantity", |s: Arc<String>| is_quantity(&s));
}

/// A Kubernetes resource quantity (`100m`, `1.5Gi`, `2e3`).
fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return false;
    }
    matches!(
        suffix,
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    })
}

/// Evaluate an expression to a string (for `messageExpression`), with values from [`bind`].
pub fn eval_string(text: &str, self_value: cel::Value, old_self: Option<cel::Value>) -> Option<String> {
    let rule = compile(text).ok()?;
    let env = env();
    let mut ctx = Context::with_env(env);
    kubernetes_library(&mut ctx);
    ctx.add_variable_from_value("self", self_value);
    if let Some(old) = old_self {
        ctx.add_variable_from_value("oldSelf", old);
    }
    let program = rule.program.clone();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || program.execute(&ctx))) {
        Ok(Ok(cel::Value::String(s))) => Some(s.to_string()),
        _ => None,
    }
}

/// Evaluate an expression with the named variables bound, as admission does (`object`, `oldObject`, `request`,
/// `params`, ...). The error is the interpreter's message.
pub fn eval_with(rule: &Rule, vars: &[(&str, cel::Value)]) -> Result<cel::Value, String> {
    let env = env();
    let program = rule.program.clone();
    let vars: Vec<(String, cel::Value)> = vars.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
    let run = move || {
        let mut ctx = Context::with_env(env);
        kubernetes_library(&mut ctx);
        for (name, value) in vars {
            ctx.add_variable_from_value(name, value);
        }
        program.execute(&ctx).map_err(|e| e.to_string())
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .unwrap_or_else(|_| Err("the CEL interpreter failed on this expression".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(rule: &str, v: Value, old: Option<Value>) -> Outcome {
        match compile(rule) {
            Ok(r) => eval(&r, to_cel(&v), old.as_ref().map(to_cel)),
            Err(e) => Outcome::Error(e),
        }
    }

    #[test]
    fn rules_from_cluster_api_evaluate() {
        assert_eq!(
            run(
                "self.all(x, self.exists_one(y, x.name == y.name))",
                json!([{"name": "a"}, {"name": "b"}]),
                None
            ),
            Outcome::Pass
        );
        assert_eq!(
            run(
                "self.all(x, self.exists_one(y, x.name == y.name))",
                json!([{"name": "a"}, {"name": "a"}]),
                None
            ),
            Outcome::Fail
        );
        assert_eq!(
            run(
                "[has(self.layout),has(self.diskLayout)].filter(x,x==true).size() == 1",
                json!({"layout": "x"}),
                None
            ),
            Outcome::Pass
        );
        assert_eq!(
            run("!(self in ['Ready','Available'])", json!("Ready"), None),
            Outcome::Fail
        );
        assert_eq!(run("self.matches('^[a-z]+$')", json!("abc"), None), Outcome::Pass);
    }

    #[test]
    fn transition_rules_see_old_self() {
        let rule = compile("self == oldSelf").expect("compiles");
        assert!(rule.uses_old_self);
        assert_eq!(
            eval(&rule, to_cel(&json!(1)), Some(to_cel(&json!(2)))),
            Outcome::Fail
        );
        assert_eq!(
            run("self.replicas >= 0", json!({"replicas": 3}), None),
            Outcome::Pass
        );
    }

    #[test]
    fn kubernetes_library_functions() {
        assert_eq!(
            run("isURL(self)", json!("https://example.com/x"), None),
            Outcome::Pass
        );
        assert_eq!(run("isURL(self)", json!("not a url"), None), Outcome::Fail);
        assert_eq!(run("isQuantity(self)", json!("1.5Gi"), None), Outcome::Pass);
        assert_eq!(run("isQuantity(self)", json!("lots"), None), Outcome::Fail);
        assert_eq!(
            run("self.lowerAscii() == 'abc'", json!("ABC"), None),
            Outcome::Pass
        );
    }

    #[test]
    fn undefined_fields_are_found_against_the_schema() {
        let schema = json!({"type": "object", "properties": {"replicas": {"type": "integer"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}});
        let check = |rule: &str| undefined_fields(&compile(rule).expect("compiles"), &schema, false);
        assert!(
            check("self.replicas > 0 && has(self.labels.team) && self.items.all(i, i.name != '')").is_empty()
        );
        assert_eq!(check("self.replica > 0"), ["replica"]);
        assert_eq!(
            check("has(self.nope) || self.replicas == oldSelf.other"),
            ["nope", "other"]
        );
    }

    #[test]
    fn absurd_nesting_is_refused_before_parsing() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(compile(&deep), Err(e) if e.contains("too deeply nested")));
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(matches!(compile("self.("), Err(e) if e.starts_with("compilation failed")));
    }

    #[test]
    fn property_names_escape_as_in_kubernetes() {
        let cases = [
            ("import", Some("__import__")),
            ("namespace", Some("__namespace__")),
            ("while", Some("__while__")),
            ("imports", Some("imports")),
            ("a.b", Some("a__dot__b")),
            ("x-prop", Some("x__dash__prop")),
            ("redact__d", Some("redact__underscores__d")),
            ("a___b", Some("a__underscores___b")),
            ("k8s.io/name", Some("k8s__dot__io__slash__name")),
            ("_under", Some("_under")),
            ("-lead", Some("__dash__lead")),
            ("1st", None),
            ("", None),
            ("has space", None),
            ("dollar$", None),
            ("ünicode", None),
        ];
        for (name, want) in cases {
            assert_eq!(escape(name).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn rules_see_escaped_declared_properties_only() {
        let schema = json!({"type": "object", "properties": {
            "import": {"type": "object", "properties": {"id": {"type": "string"}}},
            "x-prop": {"type": "integer"},
            "1st": {"type": "string"},
            "ratio": {"type": "number"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
        let value = json!({"import": {"id": "x"}, "x-prop": 3, "1st": "a", "ratio": 2, "labels": {"a.b/c": "v"},
            "free": {"hidden": true}, "undeclared": 1});
        let check = |rule: &str| {
            let compiled = compile(rule).expect("compiles");
            assert!(undefined_fields(&compiled, &schema, false).is_empty(), "{rule}");
            eval(&compiled, bind(&value, &schema, false), None)
        };
        assert_eq!(
            check("has(self.__import__) && self.__import__.id == 'x'"),
            Outcome::Pass
        );
        assert_eq!(check("self.x__dash__prop == 3"), Outcome::Pass);
        assert_eq!(check("self.ratio > 1.5"), Outcome::Pass);
        assert_eq!(check("self.labels['a.b/c'] == 'v'"), Outcome::Pass);
        assert_eq!(check("!has(self.free.hidden)"), Outcome::Pass);
        assert_eq!(check("self.size() == 5"), Outcome::Pass);
        let unescaped = compile("has(self.import)").expect("compiles");
        assert_eq!(undefined_fields(&unescaped, &schema, false), ["import"]);
    }

    #[test]
    fn the_root_shows_type_meta_and_the_name_only() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"x": {"type": "integer"}}}}});
        let v = json!({"apiVersion": "a.io/v1", "kind": "K", "metadata": {"name": "n", "labels": {"a": "b"}}, "spec": {"x": 1}});
        let rule =
            "self.kind == 'K' && self.metadata.name == 'n' && !has(self.metadata.labels) && self.spec.x == 1";
        let compiled = compile(rule).expect("compiles");
        assert!(undefined_fields(&compiled, &schema, true).is_empty());
        assert_eq!(eval(&compiled, bind(&v, &schema, true), None), Outcome::Pass);
    }
}
