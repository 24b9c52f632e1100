//! `--output text|json|csv` for every read command: text for people (rounded, aligned), json
//! and csv for programs (every number at full precision, every row, stable column names).

use std::io::Write;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal (probabilities as percentages to one decimal).
    #[default]
    Text,
    /// A JSON array of objects, numbers at full precision.
    Json,
    /// RFC 4180 CSV with a header row, numbers at full precision.
    Csv,
}

#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// One cell. Text shows `Prob` as a percentage; json and csv show the number as it is.
#[derive(Debug, Clone)]
pub enum Cell {
    Text(String),
    Int(i64),
    Num(f64),
    Prob(f64),
    Bool(bool),
    /// Structured data (reasons, evidence): JSON in json, compact JSON text in csv, a summary in text.
    Json(Value, String),
    Empty,
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Text(s.to_owned())
    }
}
impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Text(s)
    }
}
impl From<u32> for Cell {
    fn from(n: u32) -> Self {
        Cell::Int(i64::from(n))
    }
}
impl From<u64> for Cell {
    fn from(n: u64) -> Self {
        Cell::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<i64> for Cell {
    fn from(n: i64) -> Self {
        Cell::Int(n)
    }
}
impl From<bool> for Cell {
    fn from(b: bool) -> Self {
        Cell::Bool(b)
    }
}
impl From<Option<f64>> for Cell {
    fn from(v: Option<f64>) -> Self {
        v.map_or(Cell::Empty, Cell::Num)
    }
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Int(n) => n.to_string(),
            Cell::Num(x) => format!("{x:.4}"),
            Cell::Prob(p) => format!("{:.1}%", 100.0 * p),
            Cell::Bool(b) => if *b { "yes" } else { "no" }.into(),
            Cell::Json(_, summary) => summary.clone(),
            Cell::Empty => String::new(),
        }
    }

    fn exact(&self) -> String {
        match self {
            // serde_json prints the shortest text that reads back as the same f64.
            Cell::Num(x) | Cell::Prob(x) => Value::from(*x).to_string(),
            Cell::Bool(b) => b.to_string(),
            Cell::Json(v, _) => v.to_string(),
            other => other.text(),
        }
    }

    fn json(&self) -> Value {
        match self {
            Cell::Text(s) => s.clone().into(),
            Cell::Int(n) => (*n).into(),
            Cell::Num(x) | Cell::Prob(x) => (*x).into(),
            Cell::Bool(b) => (*b).into(),
            Cell::Json(v, _) => v.clone(),
            Cell::Empty => Value::Null,
        }
    }
}

/// Rows with named columns.
pub struct Table {
    columns: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len(), "a row per column");
        self.rows.push(row);
    }

    pub fn into_rows(self) -> Vec<Vec<Cell>> {
        self.rows
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Writes the table to stdout in `format`. Text from the server is made safe for a
    /// terminal in every format (see `client::safe`).
    pub fn print(&self, format: Format) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match format {
            Format::Text => {
                let cells: Vec<Vec<String>> = self
                    .rows
                    .iter()
                    .map(|r| r.iter().map(|c| crate::client::safe(&c.text()).into_owned()).collect())
                    .collect();
                let widths: Vec<usize> = (0..self.columns.len())
                    .map(|i| {
                        cells.iter().map(|r| r[i].chars().count()).chain([self.columns[i].len()]).max().unwrap_or(0)
                    })
                    .collect();
                let line = |vals: Vec<&str>| {
                    let padded: Vec<String> = vals.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
                    padded.join("  ").trim_end().to_string()
                };
                writeln!(out, "{}", line(self.columns.clone()))?;
                for r in &cells {
                    writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
                }
            }
            Format::Json => {
                let rows: Vec<Value> = self
                    .rows
                    .iter()
                    .map(|r| {
                        let obj: serde_json::Map<String, Value> =
                            self.columns.iter().zip(r).map(|(k, c)| (k.to_string(), c.json())).collect();
                        Value::Object(obj)
                    })
                    .collect();
                let text = serde_json::to_string_pretty(&rows)?;
                writeln!(out, "{}", crate::client::safe(&text))?;
            }
            Format::Csv => {
                let mut w = csv::Writer::from_writer(Vec::new());
                w.write_record(&self.columns)?;
                for r in &self.rows {
                    w.write_record(r.iter().map(|c| crate::client::safe(&c.exact()).into_owned()))?;
                }
                out.write_all(&w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_precision_outside_text() {
        let c = Cell::Prob(0.996_123_456_789_012_3);
        assert_eq!(c.text(), "99.6%");
        assert_eq!(c.exact().parse::<f64>().unwrap(), 0.996_123_456_789_012_3);
        assert_eq!(c.json(), serde_json::json!(0.996_123_456_789_012_3));
    }
}
