//! `sticky-calls import` and `sticky-calls export`: a tenant's customers in and out as files.
//!
//! Import reads CSV (a header row: `customer_ref`, `phone_numbers` with several numbers
//! separated by `;`, `ext_<name>` external ids, `var_<name>` variables) or JSON Lines (one
//! object per line: `customer_ref`, `phone_numbers`, `external_ids`, `variables`). Every row is
//! validated as the API validates the same values; a bad row is reported with its line number
//! and skipped, or stops the import before anything is written (`--on-error stop`, the
//! default: the whole file is checked first). Rows are imported in batches, each in one
//! transaction. Export writes one JSON object per customer, as `GET /v1/customers/{ref}` does.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context as _;
use poem_openapi::types::ToJSON;
use serde_json::Value;
use sticky_core::commands::VariableChanges;
use sticky_core::domain::{CustomerRef, DefaultRegion, ExternalId, PhoneNumber};
use sticky_core::engine::{Engine, ImportReport, ImportedCustomer, ImportedIdentity, TenantId};

use crate::api::customers::CustomerExportDto;

/// Customers per transaction.
const BATCH: usize = 1000;

/// What a bad row does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Report it and go on with the other rows.
    Skip,
    /// Report it and write nothing (the whole file is checked before anything is written).
    Stop,
}

/// The format of an import file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// From the file's extension: `.csv` is CSV, anything else JSON Lines.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Self::Csv,
            _ => Self::Jsonl,
        }
    }
}

/// A row that cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Its line in the file (1 is the first line; a CSV's header is line 1).
    pub line: u64,
    /// The column or key at fault.
    pub field: String,
    /// What is wrong (never the value itself: it may be personal data).
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: `{}`: {}", self.line, self.field, self.message)
    }
}

/// One customer as a file gives it, before validation.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomer {
    customer_ref: String,
    #[serde(default)]
    phone_numbers: Vec<String>,
    #[serde(default)]
    external_ids: BTreeMap<String, String>,
    #[serde(default)]
    variables: BTreeMap<String, Value>,
}

fn invalid(line: u64, field: impl Into<String>, message: impl Into<String>) -> RowError {
    RowError {
        line,
        field: field.into(),
        message: message.into(),
    }
}

/// Validates a row.
fn customer(
    line: u64,
    raw: RawCustomer,
    region: DefaultRegion,
) -> Result<ImportedCustomer, RowError> {
    let customer_ref =
        CustomerRef::parse(&raw.customer_ref).map_err(|e| invalid(line, "customer_ref", e.0))?;
    let mut identities = Vec::new();
    for (i, number) in raw.phone_numbers.iter().enumerate() {
        let n = PhoneNumber::parse(number, region)
            .map_err(|r| invalid(line, format!("phone_numbers[{i}]"), r.describe()))?;
        identities.push(ImportedIdentity::Ani(n));
    }
    for (name, value) in &raw.external_ids {
        let id = ExternalId::new(name, value)
            .map_err(|e| invalid(line, format!("external_ids.{name}"), e.0))?;
        identities.push(ImportedIdentity::External(id));
    }
    if let Some((name, _)) = raw.variables.iter().find(|(_, v)| v.is_null()) {
        return Err(invalid(
            line,
            format!("variables.{name}"),
            "a variable's value cannot be null",
        ));
    }
    // The API's limits on names, sizes and count.
    VariableChanges::parse(raw.variables.clone()).map_err(|e| invalid(line, e.field, e.message))?;
    Ok(ImportedCustomer {
        customer_ref,
        identities,
        variables: raw.variables,
        calls: Vec::new(),
        open_intents: Vec::new(),
    })
}

/// The rows of a file, each validated or refused, with its line number.
pub type Rows = Box<dyn Iterator<Item = Result<(u64, ImportedCustomer), RowError>>>;

/// Reads `path` as `format`.
///
/// # Errors
/// When the file cannot be opened, or a CSV header names a column we do not know.
pub fn read(path: &Path, format: Format, region: DefaultRegion) -> anyhow::Result<Rows> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = std::io::BufReader::new(file);
    Ok(match format {
        Format::Jsonl => Box::new(reader.lines().enumerate().filter_map(move |(i, line)| {
            let line_no = i as u64 + 1;
            match line {
                Err(e) => Some(Err(invalid(line_no, "-", format!("unreadable: {e}")))),
                Ok(text) if text.trim().is_empty() => None,
                Ok(text) => Some(
                    serde_json::from_str::<RawCustomer>(&text)
                        .map_err(|e| json_error(line_no, &e))
                        .and_then(|raw| customer(line_no, raw, region))
                        .map(|c| (line_no, c)),
                ),
            }
        })),
        Format::Csv => {
            let mut csv = csv::ReaderBuilder::new()
                .flexible(false)
                .from_reader(reader);
            let header: Vec<String> = csv
                .headers()
                .context("reading the CSV header")?
                .iter()
                .map(|h| h.trim().to_owned())
                .collect();
            if !header.iter().any(|h| h == "customer_ref") {
                anyhow::bail!("line 1: the CSV header has no `customer_ref` column");
            }
            if let Some(unknown) = header.iter().find(|h| {
                !(*h == "customer_ref"
                    || *h == "phone_numbers"
                    || h.starts_with("ext_")
                    || h.starts_with("var_"))
            }) {
                anyhow::bail!(
                    "line 1: unknown column `{unknown}` (known: customer_ref, phone_numbers, \
                     ext_<name>, var_<name>)"
                );
            }
            Box::new(csv.into_records().map(move |record| {
                let record = record.map_err(|e| {
                    let line = e.position().map_or(0, csv::Position::line);
                    invalid(line, "-", format!("not a CSV row: {}", csv_kind(&e)))
                })?;
                let line = record.position().map_or(0, csv::Position::line);
                let mut raw = RawCustomer::default();
                for (column, value) in header.iter().zip(record.iter()) {
                    let value = value.trim();
                    if value.is_empty() {
                        continue;
                    }
                    if column == "customer_ref" {
                        value.clone_into(&mut raw.customer_ref);
                    } else if column == "phone_numbers" {
                        raw.phone_numbers = value
                            .split(';')
                            .map(str::trim)
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned)
                            .collect();
                    } else if let Some(name) = column.strip_prefix("ext_") {
                        raw.external_ids.insert(name.to_owned(), value.to_owned());
                    } else if let Some(name) = column.strip_prefix("var_") {
                        raw.variables
                            .insert(name.to_owned(), Value::String(value.to_owned()));
                    }
                }
                customer(line, raw, region).map(|c| (line, c))
            }))
        }
    })
}

fn csv_kind(e: &csv::Error) -> &'static str {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { .. } => "its number of fields differs from the header's",
        csv::ErrorKind::Utf8 { .. } => "not UTF-8",
        _ => "unreadable",
    }
}

/// A JSON error, naming the key when serde says which (never the value).
fn json_error(line: u64, e: &serde_json::Error) -> RowError {
    let text = e.to_string();
    let field = text
        .split('`')
        .nth(1)
        .filter(|_| text.starts_with("unknown field") || text.starts_with("missing field"))
        .unwrap_or("-")
        .to_owned();
    let message = if text.starts_with("unknown field") {
        "unknown key (known: customer_ref, phone_numbers, external_ids, variables)".to_owned()
    } else if text.starts_with("missing field") {
        "missing".to_owned()
    } else if e.is_syntax() || e.is_eof() {
        "not a JSON object".to_owned()
    } else {
        // A wrong type: serde names the expected one, not the value.
        format!(
            "wrong type ({})",
            text.split(" at line").next().unwrap_or("invalid")
        )
    };
    invalid(line, field, message)
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Rows written.
    pub written: ImportReport,
    /// Rows refused.
    pub refused: Vec<RowError>,
}

/// Imports `rows` into `tenant`. `progress` is told after each batch how many rows were read.
///
/// # Errors
/// Database failures; with [`OnError::Stop`], the first bad row (nothing is written then).
pub async fn import(
    engine: &Engine,
    tenant: TenantId,
    rows: impl Fn() -> anyhow::Result<Rows>,
    on_error: OnError,
    progress: &dyn Fn(u64),
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    if on_error == OnError::Stop {
        // Checked before anything is written: every row, duplicates in the file, and refs the
        // tenant already has.
        let mut seen = HashSet::new();
        let mut batch: Vec<(u64, String)> = Vec::new();
        for row in rows()? {
            let (line, c) = row.map_err(|e| anyhow::anyhow!("{e}; nothing was imported"))?;
            let r = c.customer_ref.as_str().to_owned();
            if !seen.insert(r.clone()) {
                anyhow::bail!(
                    "{}; nothing was imported",
                    invalid(
                        line,
                        "customer_ref",
                        "appears on an earlier line of the file"
                    )
                );
            }
            batch.push((line, r));
            if batch.len() == BATCH {
                refuse_existing(engine, tenant, &batch).await?;
                batch.clear();
            }
        }
        refuse_existing(engine, tenant, &batch).await?;
    }
    let mut seen = HashSet::new();
    let mut batch: Vec<(u64, ImportedCustomer)> = Vec::with_capacity(BATCH);
    let mut read = 0;
    for row in rows()? {
        read += 1;
        match row {
            Err(e) => summary.refused.push(e),
            Ok((line, c)) => {
                if seen.insert(c.customer_ref.as_str().to_owned()) {
                    batch.push((line, c));
                } else {
                    summary.refused.push(invalid(
                        line,
                        "customer_ref",
                        "appears on an earlier line of the file",
                    ));
                }
            }
        }
        if batch.len() == BATCH {
            write_batch(engine, tenant, std::mem::take(&mut batch), &mut summary).await?;
            progress(read);
        }
    }
    write_batch(engine, tenant, batch, &mut summary).await?;
    progress(read);
    Ok(summary)
}

async fn refuse_existing(
    engine: &Engine,
    tenant: TenantId,
    batch: &[(u64, String)],
) -> anyhow::Result<()> {
    let refs: Vec<&str> = batch.iter().map(|(_, r)| r.as_str()).collect();
    let existing = engine.existing_refs(tenant, &refs).await?;
    if let Some((line, _)) = batch.iter().find(|(_, r)| existing.contains(r)) {
        anyhow::bail!(
            "{}; nothing was imported",
            invalid(
                *line,
                "customer_ref",
                "the tenant already has this customer"
            )
        );
    }
    Ok(())
}

async fn write_batch(
    engine: &Engine,
    tenant: TenantId,
    batch: Vec<(u64, ImportedCustomer)>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let refs: Vec<&str> = batch.iter().map(|(_, c)| c.customer_ref.as_str()).collect();
    let existing = engine.existing_refs(tenant, &refs).await?;
    let mut customers = Vec::with_capacity(batch.len());
    for (line, c) in batch {
        if existing.iter().any(|e| e == c.customer_ref.as_str()) {
            summary.refused.push(invalid(
                line,
                "customer_ref",
                "the tenant already has this customer",
            ));
        } else {
            customers.push(c);
        }
    }
    if customers.is_empty() {
        return Ok(());
    }
    let report = engine.import_customers(tenant, customers).await?;
    summary.written.customers += report.customers;
    summary.written.identities += report.identities;
    summary.written.variables += report.variables;
    summary.written.calls += report.calls;
    summary.written.intents += report.intents;
    Ok(())
}

/// Writes every customer of `tenant` to `out`, one JSON object per line. Returns how many.
///
/// # Errors
/// Database or write failures.
pub async fn export(engine: &Engine, tenant: TenantId, out: &mut dyn Write) -> anyhow::Result<u64> {
    let mut after = 0;
    let mut written = 0;
    loop {
        let page = engine.export_customers(tenant, after, 500).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = *last;
        for (_, export) in page {
            let dto = CustomerExportDto::from(export);
            let json = dto.to_json().unwrap_or(Value::Null);
            serde_json::to_writer(&mut *out, &json)?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn rows(text: &str, format: Format) -> Vec<Result<(u64, String), RowError>> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        read(f.path(), format, DefaultRegion::default())
            .unwrap()
            .map(|r| r.map(|(line, c)| (line, c.customer_ref.as_str().to_owned())))
            .collect()
    }

    #[test]
    fn csv_rows_are_validated_with_their_line_numbers() {
        let got = rows(
            "customer_ref,phone_numbers,ext_crm_id,var_tier\n\
             ana,+14155550101;(415) 555-0102,crm-1,gold\n\
             bo,not a number,,\n\
             ,+14155550103,,\n\
             cy,,crm-3,\n",
            Format::Csv,
        );
        assert_eq!(got[0], Ok((2, "ana".to_owned())));
        assert_eq!(got[1].as_ref().unwrap_err().line, 3);
        assert_eq!(got[1].as_ref().unwrap_err().field, "phone_numbers[0]");
        assert_eq!(got[2].as_ref().unwrap_err().line, 4);
        assert_eq!(got[2].as_ref().unwrap_err().field, "customer_ref");
        assert_eq!(got[3], Ok((5, "cy".to_owned())));
    }

    #[test]
    fn an_unknown_csv_column_stops_at_the_header() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"customer_ref,email\nana,a@example.com\n")
            .unwrap();
        let e = read(f.path(), Format::Csv, DefaultRegion::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown column `email`"), "{e}");
    }

    #[test]
    fn json_lines_name_the_key_and_never_the_value() {
        let got = rows(
            "{\"customer_ref\": \"ana\", \"phone_numbers\": [\"+14155550101\"], \
             \"variables\": {\"tier\": \"gold\"}}\n\
             \n\
             {\"customer_ref\": \"bo\", \"email\": \"bo@example.com\"}\n\
             {\"customer_ref\": \"cy\", \"variables\": {\"x\": null}}\n\
             {\"customer_ref\": \"dee\", \"external_ids\": {\"crm id\": \"1\"}}\n\
             not json\n",
            Format::Jsonl,
        );
        assert_eq!(got[0], Ok((1, "ana".to_owned())));
        let errors: Vec<(u64, String)> = got[1..]
            .iter()
            .map(|r| {
                let e = r.as_ref().unwrap_err();
                assert!(!e.message.contains("example.com"), "{e}");
                (e.line, e.field.clone())
            })
            .collect();
        assert_eq!(
            errors,
            [
                (3, "email".to_owned()),
                (4, "variables.x".to_owned()),
                (5, "external_ids.crm id".to_owned()),
                (6, "-".to_owned()),
            ]
        );
    }
}
