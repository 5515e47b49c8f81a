//! Events as JSON (what a client sends the features plugin): one object
//! `{"MET_pt": 31.2, "Jet_pt": [40.1, 22.0]}` or a list of them; a number
//! (or boolean) is a flat branch, a list a jagged one.

use serde_json::Value as Json;

use crate::columns::Columns;
use crate::spec::Error;

fn err(message: String) -> Error {
    Error { origin: String::new(), line: None, message }
}

/// Columns of `branches` from JSON events.
pub fn columns_from_json(json: &Json, branches: &[String]) -> Result<Columns, Error> {
    let events: Vec<&Json> = match json {
        Json::Array(v) => v.iter().collect(),
        Json::Object(_) => vec![json],
        _ => return Err(err("expected an event (a JSON object of branch values) or a list of events".into())),
    };
    let num = |v: &Json, b: &str, i: usize| -> Result<f64, Error> {
        match v {
            Json::Number(n) => n.as_f64().ok_or_else(|| err(format!("event {i}: `{b}` is not a number"))),
            Json::Bool(x) => Ok(if *x { 1.0 } else { 0.0 }),
            _ => Err(err(format!("event {i}: `{b}` holds {v}, expected a number"))),
        }
    };
    let mut cols = Columns::new(events.len());
    for b in branches {
        let mut jagged = None;
        let mut flat = Vec::new();
        let (mut counts, mut content) = (Vec::new(), Vec::new());
        for (i, e) in events.iter().enumerate() {
            let Json::Object(map) = e else { return Err(err(format!("event {i} is not a JSON object"))) };
            let v = map.get(b.as_str()).ok_or_else(|| err(format!("event {i} has no branch `{b}`")))?;
            let is_list = v.is_array();
            if *jagged.get_or_insert(is_list) != is_list {
                return Err(err(format!("event {i}: `{b}` is {} here but not in event 0", if is_list { "a list" } else { "a number" })));
            }
            match v {
                Json::Array(xs) => {
                    counts.push(xs.len() as u64);
                    for x in xs {
                        content.push(num(x, b, i)?);
                    }
                }
                _ => flat.push(num(v, b, i)?),
            }
        }
        if jagged == Some(true) {
            cols.insert_jagged(b, &counts, content)?;
        } else {
            cols.insert_flat(b, flat)?;
        }
    }
    Ok(cols)
}
