//! The spec read from TOML and run: lines in errors, padding, sorting,
//! masks, fitting and standardisation.

use crate::toml::from_toml;
use crate::{Columns, Data, Features, Stats};

const SPEC: &str = r#"tree = "Events"
selection = ["nJet >= 1"]
weight = "genWeight"
observers = ["event"]

[[inputs]]
name = "jets"
pad = 2
sort = "Jet_pt"
features = ["Jet_pt", "logpt = log(Jet_pt)", "dphi = delta_phi(Jet_phi, MET_phi)"]
scale = "none"
scales = { logpt = "standard" }

[[inputs]]
name = "event"
features = ["MET_pt", "ht = sum(Jet_pt)"]
scale = "minmax"

[labels]
classes = ["b", "s"]
expression = "MET_pt > 25"
"#;

fn cols() -> Columns {
    let mut c = Columns::new(3);
    c.insert_flat("nJet", vec![3.0, 0.0, 1.0]).unwrap();
    c.insert_flat("MET_pt", vec![30.0, 10.0, 20.0]).unwrap();
    c.insert_flat("MET_phi", vec![0.0, 0.0, 1.0]).unwrap();
    c.insert_flat("genWeight", vec![1.0, 2.0, 0.5]).unwrap();
    c.insert_flat("event", vec![7.0, 8.0, 9.0]).unwrap();
    c.insert_jagged("Jet_pt", &[3, 0, 1], vec![10.0, 50.0, 20.0, 5.0]).unwrap();
    c.insert_jagged("Jet_phi", &[3, 0, 1], vec![0.1, 0.2, 0.3, 3.0]).unwrap();
    c
}

fn fitted() -> Features {
    let mut f = from_toml(SPEC, "spec.toml").unwrap();
    let c = cols();
    let keep = f.select(&c).unwrap();
    assert_eq!(keep, [true, false, true]);
    let mut stats = Stats::default();
    f.accumulate(&c, Some(&keep), &mut stats).unwrap();
    f.fit(&stats).unwrap();
    f
}

#[test]
fn transforms_pad_sort_mask_and_scale() {
    let f = fitted();
    let c = cols();
    let keep = f.select(&c).unwrap();
    let t = f.transform(&c, Some(&keep)).unwrap();
    assert_eq!(t.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["jets", "jets_mask", "event"]);
    assert_eq!(t[0].shape, [2, 2, 3]);
    let Data::F32(j) = &t[0].data else { panic!() };
    // Event 0: jets sorted by pt (50, 20; 10 dropped); event 2: one jet, then padding.
    assert_eq!(j[0], 50.0);
    assert_eq!(j[3], 20.0);
    assert_eq!(j[6], 5.0);
    assert_eq!(&j[9..12], &[0.0, 0.0, 0.0]);
    // log(pt) standardised over the 3 kept jets (50, 20, 5).
    let logs = [50f64.ln(), 20f64.ln(), 5f64.ln()];
    let mean = logs.iter().sum::<f64>() / 3.0;
    let std = (logs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 3.0).sqrt();
    assert!((j[1] as f64 - (logs[0] - mean) / std).abs() < 1e-6, "{}", j[1]);
    // dphi of the 5 GeV jet: 3.0 - 1.0 = 2.0.
    assert!((j[8] - 2.0).abs() < 1e-6);
    assert_eq!(t[1].data, Data::Bool(vec![true, true, true, false]));
    let Data::F32(e) = &t[2].data else { panic!() };
    // minmax: MET 30 -> 1, 20 -> 0; HT 80 -> 1, 5 -> 0.
    assert_eq!(e, &[1.0, 1.0, 0.0, 0.0]);
    assert_eq!(f.weights(&c, Some(&keep)).unwrap(), Some(vec![1.0, 0.5]));
    assert_eq!(f.label_values(&c, Some(&keep)).unwrap(), Some(vec![1.0, 0.0]));
    let names: Vec<_> = f.branches().into_iter().map(|b| b.0).collect();
    assert_eq!(names, ["Jet_pt", "Jet_phi", "MET_phi", "MET_pt", "nJet", "genWeight", "event"]);
    // The compiled spec (fits included) read back gives the same bits.
    let again = Features::from_json(&f.to_json(), "bundle").unwrap();
    assert_eq!(again.transform(&c, Some(&keep)).unwrap(), t);
    assert_eq!(again.spec(), f.spec());
}

fn err(text: &str) -> String {
    match from_toml(text, "s.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_specs_name_their_line() {
    let e = err("[[inputs]]\nname = \"x\"\nfeatures = [\"a\",\n  \"lg(b)\"]\n");
    assert!(e.starts_with("s.toml line 4: input `x`, feature `lg(b)`: `lg(b)`: unknown function `lg`"), "{e}");
    let e = err("[[inputs]]\nname = \"x\"\npadd = 3\nfeatures = [\"a\"]\n");
    assert!(e.starts_with("s.toml line 3: unknown field `padd`"), "{e}");
    let e = err("[[inputs]]\nname = \"x\"\nfeatures = [\"a\"]\nscale = \"zscore\"\n");
    assert!(e.starts_with("s.toml line 4: unknown scale `zscore`"), "{e}");
    let e = err("tree = \"T\"\n");
    assert!(e.contains("no [[inputs]]"), "{e}");
    let e = err("[[inputs]]\nname = \"x\"\nfeatures = [\"a\"]\n\n[labels]\nclasses = [\"b\", \"s\"]\nfiles = { b = [\"b.root\"] }\n");
    assert!(e.starts_with("s.toml line 5: labels: class `s` has no files"), "{e}");
    let e = err("[[inputs]]\nname = \"x\"\nfeatures = [\"a\"]\nsort = \"a\"\n");
    assert!(e.starts_with("s.toml line 4: input `x`: `sort` needs a `pad`"), "{e}");
}

#[test]
fn bad_data_names_the_feature_line() {
    let f = from_toml("[[inputs]]\nname = \"x\"\nscale = \"none\"\nfeatures = [\"MET_pt\",\n \"Jet_pt\"]\n", "s.toml").unwrap();
    let e = f.transform(&cols(), None).unwrap_err().to_string();
    assert!(e.starts_with("s.toml line 5: input `x`, feature `Jet_pt` is jagged: give input `x` a `pad` length"), "{e}");
    let f = from_toml("[[inputs]]\nname = \"x\"\nscale = \"none\"\nfeatures = [\"Jet_nope\"]\n", "s.toml").unwrap();
    let e = f.transform(&cols(), None).unwrap_err().to_string();
    assert_eq!(e, "s.toml line 4: input `x`, feature `Jet_nope`: no branch `Jet_nope` in the data");
    let mut f = from_toml("selection = \"nJet > 10\"\n[[inputs]]\nname = \"x\"\nfeatures = [\"MET_pt\"]\n", "s.toml").unwrap();
    let c = cols();
    let keep = f.select(&c).unwrap();
    let mut stats = Stats::default();
    f.accumulate(&c, Some(&keep), &mut stats).unwrap();
    let e = f.fit(&stats).unwrap_err().to_string();
    assert!(e.starts_with("s.toml line 4: input `x`, feature `MET_pt`: no finite values"), "{e}");
    let e = f.transform(&c, None).unwrap_err().to_string();
    assert!(e.contains("not fitted"), "{e}");
}

#[test]
fn json_events_become_columns() {
    let f = fitted();
    let branches: Vec<String> = f.branches().into_iter().map(|b| b.0).collect();
    let json: serde_json::Value = serde_json::from_str(
        r#"[{"nJet": 3, "MET_pt": 30, "MET_phi": 0, "genWeight": 1, "event": 7, "Jet_pt": [10, 50, 20], "Jet_phi": [0.1, 0.2, 0.3]},
            {"nJet": 1, "MET_pt": 20, "MET_phi": 1, "genWeight": 0.5, "event": 9, "Jet_pt": [5], "Jet_phi": [3.0]}]"#,
    )
    .unwrap();
    let c = crate::columns_from_json(&json, &branches).unwrap();
    let all = cols();
    let keep = f.select(&all).unwrap();
    assert_eq!(f.transform(&c, None).unwrap(), f.transform(&all, Some(&keep)).unwrap());
    let bad: serde_json::Value = serde_json::from_str(r#"{"nJet": 1}"#).unwrap();
    let e = crate::columns_from_json(&bad, &branches).unwrap_err().to_string();
    assert_eq!(e, "event 0 has no branch `Jet_pt`");
}
