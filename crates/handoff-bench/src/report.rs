//! The run's figures: an ordered JSON object and a table for people.

use serde_json::Value;

/// How a figure compares with its target.
pub enum Goal {
    /// At most this much.
    AtMost(f64),
    /// At least this much.
    AtLeast(f64),
}

impl Goal {
    fn text(&self) -> String {
        match self {
            Goal::AtMost(t) => format!("<= {t}"),
            Goal::AtLeast(t) => format!(">= {t}"),
        }
    }

    fn met(&self, value: f64) -> bool {
        match self {
            Goal::AtMost(t) => value <= *t,
            Goal::AtLeast(t) => value >= *t,
        }
    }
}

struct Row {
    key: String,
    value: Option<f64>,
    detail: String,
    target: Option<Goal>,
}

/// Keys in the order they were set, so the JSON reads like the table;
/// then `targets` and the raw `samples`.
#[derive(Default)]
pub struct Report {
    entries: Vec<(String, Value)>,
    rows: Vec<Row>,
    targets: serde_json::Map<String, Value>,
    samples: serde_json::Map<String, Value>,
}

impl Report {
    pub fn new() -> Report {
        Report::default()
    }

    /// Set `key` (replacing an earlier value).
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    /// A headline figure: set in the JSON and shown in the table with what
    /// it was computed from and, when it has one, its target.
    pub fn figure(&mut self, key: &str, value: Option<f64>, detail: String, target: Option<Goal>) {
        self.set(key, value.map(|v| crate::stats::round(v, 3)));
        if let Some(t) = &target {
            self.targets.insert(
                key.to_string(),
                serde_json::json!({ "target": t.text(), "met": value.map(|v| t.met(v)) }),
            );
        }
        self.rows.push(Row {
            key: key.to_string(),
            value,
            detail,
            target,
        });
    }

    /// Raw samples behind a figure, in milliseconds unless the name says.
    pub fn sample(&mut self, name: &str, value: Value) {
        self.samples.insert(name.to_string(), value);
    }

    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        let tail = [
            ("targets".to_string(), Value::Object(self.targets.clone())),
            ("samples".to_string(), Value::Object(self.samples.clone())),
        ];
        for (i, (key, value)) in self.entries.iter().chain(tail.iter()).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::String(key.clone()).to_string());
            out.push(':');
            out.push_str(&value.to_string());
        }
        out.push('}');
        out
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<32} {:>10}  {:<10} {:<7} {}\n",
            "figure", "value", "target", "", "from"
        );
        for row in &self.rows {
            let value = row
                .value
                .map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}"));
            let (target, status) = match (&row.target, row.value) {
                (Some(t), Some(v)) => (t.text(), if t.met(v) { "met" } else { "MISSED" }),
                (Some(t), None) => (t.text(), "n/a"),
                (None, _) => (String::new(), ""),
            };
            out.push_str(&format!(
                "{:<32} {:>10}  {:<10} {:<7} {}\n",
                row.key, value, target, status, row.detail
            ));
        }
        out.push('\n');
        for (key, value) in &self.entries {
            if self.rows.iter().any(|r| &r.key == key) {
                continue;
            }
            out.push_str(&format!("{key} = {value}\n"));
        }
        out
    }
}
