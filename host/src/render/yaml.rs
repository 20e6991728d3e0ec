//! Rendered manifests read the way Helm and kubectl read them.
//!
//! Helm turns each rendered document into JSON with `sigs.k8s.io/yaml`, which decodes with go-yaml v2:
//! YAML 1.1 scalars (`0400` is the octal 256, `on` and `yes` are `true`), merge keys (`<<`), duplicate
//! keys where the last one wins, and map keys that are numbers or booleans written as strings. The
//! API server sees that JSON. serde_yaml reads YAML 1.2 instead, so the same chart would reach the API
//! server differently from stackhost than from Helm (cilium's `defaultMode: 0400` arrived as the
//! string "0400", which a real API server refuses). This module reproduces go-yaml v2's reading.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Nesting deeper than this is refused (the parser limits only flow nesting, `[[[...]]]`).
const MAX_DEPTH: usize = 256;

/// What aliases may add to a render: each `*alias` copies its anchored value, so a few lines can
/// stand for gigabytes. The copies of one render together may cost at most this many bytes.
pub const MAX_ALIAS_BYTES: usize = 64 << 20;

/// Reads every document of `text`; empty documents are `Value::Null`. `alias_bytes` is what
/// aliases may still copy (see [`MAX_ALIAS_BYTES`]); it is shared by the documents of one render.
pub fn documents(text: &str, alias_bytes: &mut usize) -> Result<Vec<Value>, String> {
    let mut loader = Loader {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        alias_bytes,
    };
    let mut out = Vec::new();
    loop {
        match loader.next()? {
            (Event::StreamStart | Event::DocumentEnd, _) => {}
            (Event::StreamEnd, _) => return Ok(out),
            (Event::DocumentStart, _) => {
                let (event, mark) = loader.next()?;
                if matches!(event, Event::DocumentEnd) {
                    out.push(Value::Null);
                    continue;
                }
                let (value, _) = loader.node(event, mark, 0)?;
                out.push(value);
            }
            (event, mark) => return Err(at(mark, format!("unexpected {event:?}"))),
        }
    }
}

struct Loader<'a, 'b> {
    parser: Parser<std::str::Chars<'a>>,
    /// Anchored values and what each costs to copy.
    anchors: HashMap<usize, (Value, usize)>,
    alias_bytes: &'b mut usize,
}

fn at(mark: Marker, what: String) -> String {
    format!("line {} column {}: {what}", mark.line(), mark.col() + 1)
}

impl Loader<'_, '_> {
    fn next(&mut self) -> Result<(Event, Marker), String> {
        self.parser.next_token().map_err(|e| e.to_string())
    }

    /// One node starting with `event`; returns the value and what copying it costs.
    fn node(&mut self, event: Event, mark: Marker, depth: usize) -> Result<(Value, usize), String> {
        if depth > MAX_DEPTH {
            return Err(at(mark, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let (anchor, built) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let cost = 16 + text.len();
                (
                    anchor,
                    (scalar(&text, style, tag.as_ref()).map_err(|e| at(mark, e))?, cost),
                )
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                let mut cost = 16;
                loop {
                    let (event, mark) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    let (item, c) = self.node(event, mark, depth + 1)?;
                    items.push(item);
                    cost += c;
                }
                (anchor, (Value::Array(items), cost))
            }
            Event::MappingStart(anchor, _) => (anchor, self.mapping(depth)?),
            Event::Alias(id) => {
                let (value, cost) = self
                    .anchors
                    .get(&id)
                    .ok_or_else(|| at(mark, "an alias names an anchor not defined before it".into()))?;
                if *cost > *self.alias_bytes {
                    return Err(at(
                        mark,
                        format!("aliases expand to more than {MAX_ALIAS_BYTES} bytes"),
                    ));
                }
                *self.alias_bytes -= cost;
                return Ok((value.clone(), *cost));
            }
            other => return Err(at(mark, format!("unexpected {other:?}"))),
        };
        if anchor > 0 {
            self.anchors.insert(anchor, built.clone());
        }
        Ok(built)
    }

    /// The entries of a mapping up to its end. Like go-yaml v2: a later key replaces an earlier one,
    /// and `<<` copies the entries of a mapping (or of a list of mappings, the first one winning) at
    /// its place, so keys after it override what it brought.
    fn mapping(&mut self, depth: usize) -> Result<(Value, usize), String> {
        let mut map = Map::new();
        let mut cost = 16;
        loop {
            let (event, mark) = self.next()?;
            if matches!(event, Event::MappingEnd) {
                break;
            }
            let merge = matches!(&event, Event::Scalar(t, TScalarStyle::Plain, _, tag)
                if t == "<<" && tag.as_ref().is_none_or(|tag| is_core(tag, "merge")));
            let (key, key_cost) = self.node(event, mark, depth + 1)?;
            let (event, value_mark) = self.next()?;
            let (value, value_cost) = self.node(event, value_mark, depth + 1)?;
            cost += key_cost + value_cost;
            if merge {
                let sources = match value {
                    Value::Array(list) => list.into_iter().rev().collect(),
                    other => vec![other],
                };
                for source in sources {
                    let Value::Object(entries) = source else {
                        return Err(at(
                            value_mark,
                            "a merge (<<) needs a mapping or a list of mappings".into(),
                        ));
                    };
                    map.extend(entries);
                }
                continue;
            }
            map.insert(key_string(key).map_err(|e| at(mark, e))?, value);
        }
        Ok((Value::Object(map), cost))
    }
}

fn is_core(tag: &Tag, name: &str) -> bool {
    tag.handle == "tag:yaml.org,2002:" && tag.suffix == name
}

/// A map key as JSON needs it: go-yaml's strings, numbers and booleans, written as sigs.k8s.io/yaml
/// writes them.
fn key_string(key: Value) -> Result<String, String> {
    match key {
        Value::String(s) => Ok(s),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(match n.as_f64().filter(|_| n.is_f64()) {
            Some(f) => go_float_key(f),
            None => n.to_string(),
        }),
        Value::Null => Err("a map key is null; JSON object keys must be strings".into()),
        _ => Err("a map key is a mapping or a list; JSON object keys must be strings".into()),
    }
}

/// `strconv.FormatFloat(f, 'g', -1, 32)`: the shortest float32 digits, in exponent form when the
/// exponent is below -4 or 6 and above.
fn go_float_key(f: f64) -> String {
    // Narrowing to float32 is what sigs.k8s.io/yaml does here.
    #[allow(clippy::cast_possible_truncation)]
    let short = f as f32;
    let scientific = format!("{short:e}");
    let (mantissa, power) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let power: i32 = power.parse().unwrap_or(0);
    if (-4..6).contains(&power) {
        format!("{short}")
    } else {
        let sign = if power < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", power.abs())
    }
}

/// One scalar, resolved as go-yaml v2 resolves it when decoding into `interface{}`.
fn scalar(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    let implicit = matches!(style, TScalarStyle::Plain);
    let Some(tag) = tag else {
        return if implicit {
            resolve(text)
        } else {
            Ok(Value::String(text.to_owned()))
        };
    };
    if tag.handle != "tag:yaml.org,2002:" {
        // go-yaml keeps the text of a scalar with a tag of its own (`!secret abc`).
        return Ok(Value::String(text.to_owned()));
    }
    let resolved = resolve(text)?;
    let mismatch = || format!("cannot decode `{text}` as a !!{}", tag.suffix);
    match tag.suffix.as_str() {
        "str" | "timestamp" => Ok(Value::String(text.to_owned())),
        "binary" => {
            use base64::Engine as _;
            let compact: String = text.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|e| format!("!!binary `{text}` is not base64: {e}"))?;
            Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        }
        "int" if resolved.is_i64() || resolved.is_u64() => Ok(resolved),
        "float" if resolved.is_number() => Ok(resolved),
        "bool" if resolved.is_boolean() => Ok(resolved),
        "null" if resolved.is_null() => Ok(resolved),
        "int" | "float" | "bool" | "null" => Err(mismatch()),
        _ => Ok(Value::String(text.to_owned())),
    }
}

/// A plain scalar: YAML 1.1 booleans and nulls, Go integer syntax (`0x1F`, `0o17`, `017`, `0b101`,
/// underscores ignored), floats; anything else is a string. Infinity and NaN are errors: Go's JSON
/// encoder refuses them, so Helm fails on them too.
fn resolve(text: &str) -> Result<Value, String> {
    let value = match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Value::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Value::Bool(false)
        }
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf"
        | "-.Inf" | "-.INF" => {
            return Err(format!(
                "`{text}` is not a number JSON can carry; quote it if a string is meant"
            ))
        }
        _ => {
            let finite = |f: &f64| f.is_finite();
            let number = match text.as_bytes()[0] {
                b'.' => text.parse::<f64>().ok().filter(finite).map(float),
                b'0'..=b'9' | b'+' | b'-' => {
                    let plain: String = text.chars().filter(|&c| c != '_').collect();
                    go_int(&plain).map(Value::Number).or_else(|| {
                        yaml_style_float(&plain)
                            .then(|| plain.parse::<f64>().ok().filter(finite).map(float))
                            .flatten()
                    })
                }
                _ => None,
            };
            number.unwrap_or_else(|| Value::String(text.to_owned()))
        }
    };
    Ok(value)
}

/// A float as Go's encoding/json writes it: integral values without a fraction (so `1e3` reaches
/// an integer field as 1000, as it does from Helm).
fn float(f: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.fract() == 0.0 && f.abs() < EXACT {
        // Exact: |f| < 2^53 and integral.
        #[allow(clippy::cast_possible_truncation)]
        return Value::Number(Number::from(f as i64));
    }
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// `strconv.ParseInt(s, 0, 64)`, then `strconv.ParseUint(s, 0, 64)`.
fn go_int(s: &str) -> Option<Number> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = digits.get(..2).map(str::to_ascii_lowercase);
    let (radix, body) = match lower.as_deref() {
        Some("0x") => (16, &digits[2..]),
        Some("0o") => (8, &digits[2..]),
        Some("0b") => (2, &digits[2..]),
        _ if digits.len() > 1 && digits.starts_with('0') => (8, &digits[1..]),
        _ => (10, digits),
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(body, radix).ok()?;
    let signed = if negative {
        -i128::from(magnitude)
    } else {
        i128::from(magnitude)
    };
    match i64::try_from(signed) {
        Ok(n) => Some(Number::from(n)),
        // Beyond int64 only ParseUint is left, and it takes no sign.
        Err(_) if s.starts_with(|c: char| c.is_ascii_digit()) => Some(Number::from(magnitude)),
        Err(_) => None,
    }
}

/// go-yaml v2's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn yaml_style_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (number, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let number_ok = match number.split_once('.') {
        Some(("", fraction)) => digits(fraction),
        Some((whole, fraction)) => digits(whole) && (fraction.is_empty() || digits(fraction)),
        None => digits(number),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    number_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(text: &str) -> Result<Vec<Value>, String> {
        documents(text, &mut { MAX_ALIAS_BYTES })
    }

    fn one(text: &str) -> Value {
        let mut docs = load(text).expect("valid YAML");
        assert_eq!(docs.len(), 1, "{docs:?}");
        docs.remove(0)
    }

    #[test]
    fn scalars_resolve_as_go_yaml_v2_resolves_them() {
        let doc = one(concat!(
            "octal: 0400\nhex: 0x1F\nnew_octal: 0o17\nbinary: 0b101\nunderscores: 1_000\n",
            "eight: 08\nnegative: -0x10\nplus: +12\nbig: 18446744073709551615\n",
            "float: 1.5\nexp: 1e3\nleading_dot: .5\ntrailing_dot: 3.\n",
            "bools: [yes, On, NO, off, y, n, True]\ntilde: ~\nempty:\nnull_word: Null\n",
            "quoted: \"0400\"\nsingle: 'on'\nblock: |\n  0400\nversion: 1.2.3\ndate: 2001-12-14\n",
            "word: .infinity\nips: 10.0.0.1\nhuge: 1e400\nminus_big: -9223372036854775808\n",
        ));
        assert_eq!(
            doc,
            json!({
                "octal": 256, "hex": 31, "new_octal": 15, "binary": 5, "underscores": 1000,
                "eight": 8, "negative": -16, "plus": 12, "big": 18_446_744_073_709_551_615_u64,
                "float": 1.5, "exp": 1000, "leading_dot": 0.5, "trailing_dot": 3,
                "bools": [true, true, false, false, true, false, true],
                "tilde": null, "empty": null, "null_word": null,
                "quoted": "0400", "single": "on", "block": "0400\n", "version": "1.2.3",
                "date": "2001-12-14", "word": ".infinity", "ips": "10.0.0.1", "huge": "1e400",
                "minus_big": i64::MIN,
            })
        );
        let err = load("x: .inf\n").expect_err("no infinity in JSON");
        assert!(err.contains("`.inf` is not a number JSON can carry"), "{err}");
    }

    #[test]
    fn merge_keys_and_duplicate_keys_follow_go_yaml() {
        let doc = one(concat!(
            "base: &base {a: 1, b: 2}\nother: &other {b: 3, c: 4}\n",
            "merged:\n  <<: *base\n  b: 9\n",
            "list:\n  <<: [*base, *other]\n",
            "dup: 1\ndup: 2\n",
            "1: int key\n1.5: float key\ntrue: bool key\n",
        ));
        assert_eq!(doc["merged"], json!({"a": 1, "b": 9}));
        assert_eq!(
            doc["list"],
            json!({"a": 1, "b": 2, "c": 4}),
            "the first mapping wins"
        );
        assert_eq!(doc["dup"], 2);
        assert_eq!(doc["1"], "int key");
        assert_eq!(doc["1.5"], "float key");
        assert_eq!(doc["true"], "bool key");
    }

    #[test]
    fn explicit_tags_decide_the_type() {
        let doc = one("s: !!str 0400\ni: !!int \"12\"\nf: !!float 2\ncustom: !secret 12\nb: !!binary aGk=\n");
        assert_eq!(
            doc,
            json!({"s": "0400", "i": 12, "f": 2, "custom": "12", "b": "hi"})
        );
        let err = load("x: !!int abc\n").expect_err("not an int");
        assert!(
            err.contains("line 1") && err.contains("cannot decode `abc` as a !!int"),
            "{err}"
        );
    }

    #[test]
    fn documents_split_and_empty_ones_are_null() {
        let docs = load("a: 1\n---\n# only a comment\n---\nb: 2\n").expect("valid");
        assert_eq!(docs, vec![json!({"a": 1}), Value::Null, json!({"b": 2})]);
    }

    #[test]
    fn alias_bombs_and_bad_keys_are_refused_with_the_place() {
        let mut bomb = String::from("a0: &a0 [\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"]\n");
        for i in 1..30 {
            let p = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let err = load(&bomb).expect_err("a bomb");
        assert!(err.contains("aliases expand to more than"), "{err}");

        let err = load("? [a]\n: 1\n").expect_err("list key");
        assert!(
            err.contains("line 1") && err.contains("JSON object keys must be strings"),
            "{err}"
        );
        let err = load("a: *nowhere\n").expect_err("unknown");
        assert!(err.contains("unknown anchor") && err.contains("line 1"), "{err}");
        let deep = "- ".repeat(300) + "x\n";
        let err = load(&deep).expect_err("deep");
        assert!(err.contains("nested deeper than 256"), "{err}");
        let flow = "[".repeat(300) + &"]".repeat(300);
        let err = load(&flow).expect_err("deep");
        assert!(err.contains("recursion limit exceeded"), "{err}");
    }
}
